// spe::set_num_threads sizes LibTorch's pool and OpenBLAS's (which LibTorch's own call leaves as
// it was loaded: every core) alike, set_threads each apart; the rules of steps and of decoding
// give their threads, and apply only when the choice is spe's.
#include "spe/util/threads.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <utility>

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

TEST(Threads, SetsEachPoolToItsOwnSize) {
  set_threads({1, 2});
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(blas_num_threads(), 2);
  set_threads({2, 1});
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(blas_num_threads(), 1);
  EXPECT_THROW(set_threads({0, 1}), std::invalid_argument);
  EXPECT_THROW(set_threads({1, 0}), std::invalid_argument);
}

auto threads_of(ThreadChoice c) { return std::make_pair(c.intra_op, c.blas); }

TEST(Threads, StepsGiveOpenBLASEveryCoreAndLibTorchOnePer300Gigaflops) {
  EXPECT_EQ(threads_of(threads_for_step(0.0, 4)), std::make_pair(1, 4));
  EXPECT_EQ(threads_for_step(1e9, 2).intra_op, 1);  // the probe model
  EXPECT_EQ(threads_for_step(84e9, 2).intra_op, 1);  // 2 intra-op threads lost with 2 BLAS threads
  EXPECT_EQ(threads_for_step(kStepFlopsPerIntraOpThread * 2 - 1, 2).intra_op, 1);
  EXPECT_EQ(threads_for_step(kStepFlopsPerIntraOpThread * 2, 2).intra_op, 2);
  EXPECT_EQ(threads_of(threads_for_step(kStepFlopsPerIntraOpThread * 5.5, 16)), std::make_pair(5, 16));
  EXPECT_EQ(threads_of(threads_for_step(1e15, 16)), std::make_pair(16, 16));
  EXPECT_EQ(threads_of(threads_for_step(1e15, 0)), std::make_pair(1, 1));
}

TEST(Threads, SoftmaxStepsKeepBothPoolsAlikeAtOnePer40Gigaflops) {
  EXPECT_EQ(threads_of(threads_for_step(1e9, 2, /*small_products=*/true)), std::make_pair(1, 1));
  EXPECT_EQ(threads_of(threads_for_step(kStepFlopsPerThread * 2 - 1, 2, true)), std::make_pair(1, 1));
  EXPECT_EQ(threads_of(threads_for_step(kStepFlopsPerThread * 2, 2, true)), std::make_pair(2, 2));
  EXPECT_EQ(threads_of(threads_for_step(kStepFlopsPerThread * 5.5, 16, true)), std::make_pair(5, 5));
}

TEST(Threads, DecodingGivesOpenBLASOnePerEightMebibytesOfWeights) {
  EXPECT_EQ(threads_of(threads_for_decoding(1 << 20, 2)), std::make_pair(1, 1));    // the music model: 2 lost
  EXPECT_EQ(threads_of(threads_for_decoding(19e6, 2)), std::make_pair(1, 2));       // width 256, 6 layers: gained
  EXPECT_EQ(threads_of(threads_for_decoding(300e6, 2)), std::make_pair(1, 2));      // width 512, 24 layers
  EXPECT_EQ(threads_for_decoding(kDecodingWeightBytesPerBlasThread * 3 - 1, 16).blas, 2);
  EXPECT_EQ(threads_for_decoding(300e6, 16).blas, 16);
  EXPECT_EQ(threads_for_decoding(300e6, 0).blas, 1);
}

TEST(Threads, TheRulesApplyOnlyWhenTheChoiceIsSpes) {
  set_num_threads(2);
  EXPECT_EQ(threads_of(choose_step_threads(1e9)), std::make_pair(2, 2));  // the user's choice (the default): kept
  EXPECT_EQ(threads_of(choose_decoding_threads(1e3)), std::make_pair(2, 2));
  EXPECT_EQ(at::get_num_threads(), 2);
  set_automatic_threads(2);
  EXPECT_EQ(threads_of(choose_step_threads(1e9)), std::make_pair(1, 2));
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(blas_num_threads(), 2);
  EXPECT_EQ(threads_of(choose_decoding_threads(1e3)), std::make_pair(1, 1));
  EXPECT_EQ(blas_num_threads(), 1);
  EXPECT_EQ(threads_of(choose_step_threads(kStepFlopsPerIntraOpThread * 3)), std::make_pair(2, 2));
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(threads_of(choose_step_threads(1e9, /*small_products=*/true)), std::make_pair(1, 1));
  EXPECT_EQ(blas_num_threads(), 1);
}

}  // namespace
}  // namespace spe
