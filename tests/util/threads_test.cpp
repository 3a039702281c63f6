// spe::set_num_threads sizes LibTorch's pool and OpenBLAS's (which LibTorch's own call leaves as
// it was loaded: every core), so no BLAS thread competes with the ones asked for; training's
// rule gives a thread per kStepFlopsPerThread of a step's work, and applies only when the
// choice is spe's.
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

TEST(Threads, OnePerFortyGigaflopsOfAStepUpToTheCores) {
  EXPECT_EQ(threads_for_step(0.0, 4), 1);
  EXPECT_EQ(threads_for_step(1e9, 2), 1);  // the probe model: 2 threads lost
  EXPECT_EQ(threads_for_step(kStepFlopsPerThread * 2 - 1, 2), 1);
  EXPECT_EQ(threads_for_step(kStepFlopsPerThread * 2, 2), 2);
  EXPECT_EQ(threads_for_step(kStepFlopsPerThread * 5.5, 16), 5);
  EXPECT_EQ(threads_for_step(1e15, 16), 16);
  EXPECT_EQ(threads_for_step(1e15, 0), 1);
}

TEST(Threads, TheStepRuleAppliesOnlyWhenTheChoiceIsSpes) {
  set_num_threads(2);
  EXPECT_EQ(choose_step_threads(1e9), 2);  // the user's choice (the default): kept
  EXPECT_EQ(at::get_num_threads(), 2);
  set_automatic_threads(2);
  EXPECT_EQ(choose_step_threads(1e9), 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(blas_num_threads(), 1);
  EXPECT_EQ(choose_step_threads(kStepFlopsPerThread * 3), 2);
  EXPECT_EQ(at::get_num_threads(), 2);
}

}  // namespace
}  // namespace spe
