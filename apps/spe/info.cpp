// `spe info`: versions, BLAS in use, thread counts and a measured GEMM rate.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "measure.h"
#include "spe/util/threads.h"
#include "spe/version.h"

namespace spe::cli {
namespace {

// The BLAS/LAPACK shared libraries this process has actually loaded.
std::set<std::string> loaded_blas_libraries() {
  std::set<std::string> found;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = path.substr(path.rfind('/') + 1);
    if (name.find("blas") != std::string::npos || name.find("lapack") != std::string::npos) {
      found.insert(path);
    }
  }
  return found;
}

void print_env(const char* name) {
  const char* value = std::getenv(name);
  std::cout << "  " << name << "=" << (value ? value : "(unset)") << "\n";
}

void run_info(int64_t gemm_size) {
  std::cout << "spe " << spe::version() << "\n"
            << installation_text()
            << "LibTorch " << TORCH_VERSION << "\n"
            << "compiler " << __VERSION__ << "\n"
            << "threads: intra-op " << at::get_num_threads() << ", inter-op "
            << at::get_num_interop_threads() << ", OpenBLAS " << spe::blas_num_threads() << ", hardware "
            << std::thread::hardware_concurrency() << "\n"
            << "parallel backend: " << at::get_parallel_info();
  std::cout << "BLAS libraries loaded:\n";
  const auto blas = loaded_blas_libraries();
  if (blas.empty()) std::cout << "  (none found in /proc/self/maps)\n";
  for (const auto& path : blas) std::cout << "  " << path << "\n";
  std::cout << "environment:\n";
  for (const char* name : {"OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                           "OMP_NUM_THREADS"}) {
    print_env(name);
  }
  const double gflops = measure_gemm_gflops(gemm_size, 5);
  std::cout << "GEMM float32 " << gemm_size << "^3: " << gflops << " GFLOP/s (median of 5)\n";
}

}  // namespace

std::string installation_text() {
  namespace fs = std::filesystem;
  constexpr const char* kOpsLibrary = "libspe_torch_ops.so";
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (error) return "installation: unknown (/proc/self/exe unreadable: " + error.message() + ")\n";
  const fs::path dir = exe.parent_path();
  // Installed: PREFIX/BINDIR/spe with the ops in PREFIX/LIBDIR; in a build tree they sit side by side.
  const bool installed = dir.filename() == fs::path(SPE_INSTALL_BINDIR).filename();
  const fs::path prefix = dir.parent_path();
  const fs::path ops = installed ? prefix / SPE_INSTALL_LIBDIR / kOpsLibrary : dir / kOpsLibrary;
  std::string text = installed ? "prefix: " + prefix.string() + "\n" : "build tree: " + dir.string() + "\n";
  text += "Python ops library: " + ops.string();
  return text + (fs::exists(ops, error) ? "\n" : " (not found)\n");
}

void add_info_command(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "versions, BLAS in use, threads, measured GEMM rate");
  auto gemm_size = std::make_shared<int64_t>(1024);
  sub->add_option("--gemm-size", *gemm_size, "matrix size of the GEMM measurement")
      ->check(CLI::Range(int64_t{16}, int64_t{8192}))
      ->capture_default_str();
  sub->callback([gemm_size] { run_info(*gemm_size); });
}

}  // namespace spe::cli
