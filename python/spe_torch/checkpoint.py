"""Reading spe's C++ checkpoints (spe train's checkpoint.pt and best.pt) without LibTorch's
archive reader: the tensors come out by their C++ names, "model/<state_dict name>".

File layout (src/train/checkpoint.cpp, src/train/tensor_file.h), little-endian:
  "SPECKPT\\0", u32 format version (2), u64 payload length, u64 FNV-1a checksum of the payload;
  payload: u64 header length, JSON header {"meta": {...}, "tensors": [{"name", "dtype", "shape"}, ...]},
  then each tensor's bytes, row-major, in the order of the list, and nothing after them."""
import json
import math
import struct
from typing import Dict, List, NamedTuple, Tuple

import torch

MAGIC = b"SPECKPT\0"
FORMAT_VERSION = 2
PREAMBLE = struct.Struct("<8sIQQ")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
          "int64": torch.int64, "uint8": torch.uint8}


class Checkpoint(NamedTuple):
    meta: dict                        # data, training state, optimizer layout
    config: str                       # the run's resolved configuration, YAML
    tensors: Dict[str, torch.Tensor]  # every other tensor by its name in the file


def fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits (include/spe/util/hash.h)."""
    h = 1469598103934665603
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _payload(data: bytes, path: str, verify: bool) -> memoryview:
    if len(data) < PREAMBLE.size or not data.startswith(MAGIC):
        raise ValueError(f"{path!r} is not an spe checkpoint (it does not start with SPECKPT)")
    _, version, length, checksum = PREAMBLE.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {version}; spe_torch reads version {FORMAT_VERSION}")
    payload = memoryview(data)[PREAMBLE.size:]
    if length != len(payload):
        raise ValueError(f"checkpoint {path!r}: its payload should be {length} bytes, the file holds {len(payload)}")
    if verify and fnv1a(payload) != checksum:
        raise ValueError(f"checkpoint {path!r} is corrupt: its checksum does not match its contents")
    return payload


def _entry(entry, path: str) -> Tuple[str, torch.dtype, List[int]]:
    """(name, dtype, shape) of one listed tensor."""
    try:
        name, dtype, shape = str(entry["name"]), DTYPES[entry["dtype"]], [int(s) for s in entry["shape"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"checkpoint {path!r} lists a damaged tensor entry {entry!r}") from None
    if any(side < 0 for side in shape):
        raise ValueError(f"checkpoint {path!r}: tensor {name!r} has the shape {shape}")
    return name, dtype, shape


def _tensors(payload: memoryview, entries: list, offset: int, path: str) -> Dict[str, torch.Tensor]:
    """The listed tensors, read one after the other from offset to the end of the payload."""
    tensors = {}
    for entry in entries:
        name, dtype, shape = _entry(entry, path)
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if name in tensors or offset + size > len(payload):
            raise ValueError(f"checkpoint {path!r}: tensor {name!r} is listed twice or runs past the end")
        raw = bytearray(payload[offset:offset + size])  # writable: the tensor owns a copy
        tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape) if size else torch.empty(shape, dtype=dtype)
        offset += size
    if offset != len(payload):
        raise ValueError(f"checkpoint {path!r}: {len(payload) - offset} bytes follow the last tensor")
    return tensors


def read_checkpoint(path: str, verify_checksum: bool = True) -> Checkpoint:
    """Every tensor of an spe checkpoint, checked against its checksum (a pure-Python loop, about
    0.1 s per MB; verify_checksum=False skips it). A damaged or foreign file raises ValueError."""
    with open(path, "rb") as f:
        payload = _payload(f.read(), path, verify_checksum)
    if len(payload) < 8:
        raise ValueError(f"checkpoint {path!r} ends before its header")
    (header_length,) = struct.unpack_from("<Q", payload)
    if header_length > len(payload) - 8:
        raise ValueError(f"checkpoint {path!r}: its header length {header_length} exceeds the bytes that follow")
    try:
        header = json.loads(bytes(payload[8:8 + header_length]))
        meta, entries = header["meta"], header["tensors"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {path!r} has a damaged header ({error})") from None
    tensors = _tensors(payload, entries, 8 + header_length, path)
    config = bytes(tensors.pop("config").tolist()).decode("utf-8", "replace") if "config" in tensors else ""
    return Checkpoint(meta, config, tensors)


def state_dict_under(checkpoint: Checkpoint, prefix: str) -> Dict[str, torch.Tensor]:
    """The model's tensors whose C++ name starts with prefix, renamed relative to it, ready for
    module.load_state_dict: state_dict_under(ckpt, "transformer.sine_spe.") gives
    {"freqs": ..., "offsets": ..., "gains": ...}."""
    full = "model/" + prefix
    return {name[len(full):]: t for name, t in checkpoint.tensors.items() if name.startswith(full)}
