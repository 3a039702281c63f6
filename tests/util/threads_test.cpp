// spe::set_num_threads sizes LibTorch's pool and OpenBLAS's (which LibTorch's own call leaves as
// it was loaded: every core), so no BLAS thread competes with the ones asked for.
#include "spe/util/threads.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <stdexcept>

namespace spe {
namespace {

TEST(Threads, SetsLibTorchAndOpenBLASAlike) {
  ASSERT_GT(blas_num_threads(), 0) << "this build of LibTorch should call OpenBLAS (libopenblas-dev)";
  for (int threads : {1, 2, 1}) {
    set_num_threads(threads);
    EXPECT_EQ(at::get_num_threads(), threads);
    EXPECT_EQ(blas_num_threads(), threads);
  }
  EXPECT_THROW(set_num_threads(0), std::invalid_argument);
}

}  // namespace
}  // namespace spe
