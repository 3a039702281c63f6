"""Finding and loading libspe_torch_ops.so, the library that registers torch.ops.spe.*."""
import os
import shutil
import sysconfig
from typing import List, Optional

import torch

LIBRARY_NAME = "libspe_torch_ops.so"
ENVIRONMENT_VARIABLE = "SPE_TORCH_OPS"

_loaded_path: Optional[str] = None


class OpsLibraryNotFoundError(ImportError):
    """libspe_torch_ops.so is in none of the places spe_torch looks."""


def _lib_dirs(prefix: str) -> List[str]:
    """<prefix>/lib and, on Debian-like systems, <prefix>/lib/<multiarch>."""
    dirs = [os.path.join(prefix, "lib")]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs.append(os.path.join(prefix, "lib", multiarch))
    return dirs


def _beside_executable() -> List[str]:
    """The library folders of an installed `spe` found on PATH, then its own folder (a build tree),
    for the path found and, when it is a symbolic link, for the file it points to."""
    exe = shutil.which("spe")
    if exe is None:
        return []
    bindirs = dict.fromkeys([os.path.dirname(os.path.abspath(exe)), os.path.dirname(os.path.realpath(exe))])
    dirs: List[str] = []
    for bindir in bindirs:
        dirs += _lib_dirs(os.path.dirname(bindir)) + [bindir]
    return dirs


def search_path() -> List[str]:
    """The candidate files after SPE_TORCH_OPS, in the order they are tried."""
    dirs = _beside_executable() + _lib_dirs("/usr/local") + _lib_dirs("/usr")
    return [os.path.join(d, LIBRARY_NAME) for d in dict.fromkeys(os.path.normpath(d) for d in dirs)]


def _explicit(path: str, origin: str) -> str:
    if not os.path.isfile(path):
        raise OpsLibraryNotFoundError(f"spe_torch: {origin} names {path!r}, which is not a file")
    return path


def find_library(path: Optional[str] = None) -> str:
    """The library file to load: `path` when given, else $SPE_TORCH_OPS, else the first file of
    search_path() that exists. Raises OpsLibraryNotFoundError naming every place tried."""
    if path is not None:
        return _explicit(path, "the path argument")
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return _explicit(from_environment, ENVIRONMENT_VARIABLE)
    tried = search_path()
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise OpsLibraryNotFoundError(
        f"spe_torch: {LIBRARY_NAME} not found. Tried ${ENVIRONMENT_VARIABLE} (not set)"
        + ("" if shutil.which("spe") else ", an `spe` executable on PATH (none)")
        + ", then:\n  " + "\n  ".join(tried)
        + f"\nSet {ENVIRONMENT_VARIABLE} to the library (e.g. build/{LIBRARY_NAME}), call "
        "spe_torch.load_library(path), or install spe (`cmake --install build`).")


def load_library(path: Optional[str] = None) -> str:
    """Registers torch.ops.spe.* from the library (see find_library) and returns its path. Once a
    library is loaded, later calls return its path; another path is refused (the ops of a process
    come from one library)."""
    global _loaded_path
    if _loaded_path is not None:
        if path is not None and os.path.realpath(path) != os.path.realpath(_loaded_path):
            raise RuntimeError(f"spe_torch: the ops are already loaded from {_loaded_path!r}; "
                               f"cannot load {path!r} as well")
        return _loaded_path
    chosen = find_library(path)
    torch.ops.load_library(chosen)
    _loaded_path = chosen
    return chosen


def ops_library_path() -> str:
    """The path of the loaded ops library (loading it first if needed)."""
    return load_library()


def try_load_at_import() -> None:
    """Loads the library when it can be found, so that torch.ops.spe.* exist for TorchScript; when
    it cannot, the error is raised by the first module or function that needs the ops."""
    try:
        load_library()
    except OpsLibraryNotFoundError:
        pass
