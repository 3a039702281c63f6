// The fused numerator of linear attention with separable features (psi = phi times per-position
// coefficients), non-causal and causal, against explicit float64 loops over the pairs, over
// lengths that split into full and partial tiles and chunks; its backward against finite
// differences and against autograd of psi materialised; its errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <tuple>

#include "spe/ops/separable_linear_attention.h"
#include "spe/random.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

struct SeparableInputs {
  at::Tensor phi_q, phi_k, v, c_q, c_k;
};

// phi of either sign (the op does not need positive features), coefficients of either sign.
SeparableInputs make_inputs(int64_t B, int64_t Nq, int64_t Nk, int64_t H, int64_t M, int64_t J, int64_t Dv,
                   at::ScalarType dtype = at::kDouble) {
  auto g = make_generator(5);
  return {at::randn({B, Nq, H, M}, g, dtype), at::randn({B, Nk, H, M}, g, dtype), at::randn({B, Nk, H, Dv}, g, dtype),
          at::randn({Nq, H, M, J}, g, dtype), at::randn({Nk, H, M, J}, g, dtype)};
}

// The definition, one pair (n, m) and one (d, j) at a time; causal: m <= n only.
at::Tensor numerator_loops(const SeparableInputs& x, bool causal = false) {
  const int64_t B = x.phi_q.size(0), Nq = x.phi_q.size(1), Nk = x.phi_k.size(1), H = x.phi_q.size(2);
  const int64_t M = x.phi_q.size(3), J = x.c_q.size(3), Dv = x.v.size(3);
  auto pq = x.phi_q.accessor<double, 4>(), pk = x.phi_k.accessor<double, 4>(), v = x.v.accessor<double, 4>();
  auto cq = x.c_q.accessor<double, 4>(), ck = x.c_k.accessor<double, 4>();
  at::Tensor out = at::zeros({B, Nq, H, Dv}, at::kDouble);
  auto o = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < Nq; ++n)
        for (int64_t m = 0; m < (causal ? n + 1 : Nk); ++m) {
          double score = 0;
          for (int64_t d = 0; d < M; ++d)
            for (int64_t j = 0; j < J; ++j) score += pq[b][n][h][d] * cq[n][h][d][j] * pk[b][m][h][d] * ck[m][h][d][j];
          for (int64_t e = 0; e < Dv; ++e) o[b][n][h][e] += score * v[b][m][h][e];
        }
  return out;
}

// The same sums through psi materialised, with ATen ops (autograd's reference for the backward).
at::Tensor numerator_materialised(const at::Tensor& phi_q, const at::Tensor& phi_k, const at::Tensor& v,
                                  const at::Tensor& c_q, const at::Tensor& c_k, bool causal = false) {
  const at::Tensor psi_q = (phi_q.unsqueeze(-1) * c_q).flatten(3), psi_k = (phi_k.unsqueeze(-1) * c_k).flatten(3);
  at::Tensor scores = at::einsum("bnhp,bmhp->bhnm", {psi_q, psi_k});
  if (causal) scores = scores.tril();
  return at::einsum("bhnm,bmhd->bnhd", {scores, v});
}

TEST(FusedSeparableLinearAttention, MatchesThePairLoopsAcrossTiles) {
  // 70 queries: a tile of 64 and one of 6; 131 keys: two full tiles and one of 3.
  for (auto [nq, nk] : {std::pair<int64_t, int64_t>{70, 131}, {1, 1}, {64, 5}}) {
    const SeparableInputs x = make_inputs(2, nq, nk, 2, 3, 4, 5);
    const at::Tensor got = ops::separable_linear_numerator(x.phi_q, x.phi_k, x.v, x.c_q, x.c_k);
    const at::Tensor expected = numerator_loops(x);
    EXPECT_LT(testing::relative_error(got, expected), 1e-10)
        << "Nq " << nq << " Nk " << nk;
  }
  // float32 against float64, at the transformer's sizes (M 16, J 11 = 2K + 1, Dv 16)
  const SeparableInputs f = make_inputs(2, 100, 100, 2, 16, 11, 16, at::kFloat);
  const at::Tensor got = ops::separable_linear_numerator(f.phi_q, f.phi_k, f.v, f.c_q, f.c_k).to(at::kDouble);
  const at::Tensor want = numerator_materialised(f.phi_q.to(at::kDouble), f.phi_k.to(at::kDouble),
                                                 f.v.to(at::kDouble), f.c_q.to(at::kDouble), f.c_k.to(at::kDouble));
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4 * want.abs().max().item<double>());
}

TEST(FusedSeparableLinearAttention, CausalMatchesThePairLoopsAcrossChunks) {
  // chunks of 32 positions: one partial, one full, a full and one position, three with a partial
  for (int64_t n : {1, 7, 32, 33, 70}) {
    const SeparableInputs x = make_inputs(2, n, n, 2, 3, 4, 5);
    const at::Tensor got = ops::separable_linear_numerator(x.phi_q, x.phi_k, x.v, x.c_q, x.c_k, /*causal=*/true);
    const at::Tensor expected = numerator_loops(x, /*causal=*/true);
    EXPECT_LT(testing::relative_error(got, expected), 1e-10)
        << "N " << n;
  }
  const SeparableInputs f = make_inputs(2, 100, 100, 2, 16, 11, 16, at::kFloat);
  const at::Tensor got = ops::separable_linear_numerator(f.phi_q, f.phi_k, f.v, f.c_q, f.c_k, true).to(at::kDouble);
  const at::Tensor want = numerator_materialised(f.phi_q.to(at::kDouble), f.phi_k.to(at::kDouble), f.v.to(at::kDouble),
                                                 f.c_q.to(at::kDouble), f.c_k.to(at::kDouble), true);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-4 * want.abs().max().item<double>());
}

TEST(FusedSeparableLinearAttention, BackwardMatchesFiniteDifferences) {
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    const SeparableInputs x = make_inputs(2, 5, causal ? 5 : 4, 2, 2, 3, 2);
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : {x.phi_q, x.phi_k, x.v, x.c_q, x.c_k}) leaves.push_back(t.clone().requires_grad_());
    const at::Tensor weights = at::randn({2, 5, 2, 2}, make_generator(6), at::kDouble);
    testing::expect_gradients_match(
        [&] {
          return (ops::separable_linear_numerator(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], causal) *
                  weights)
              .sum();
        },
        {{"phi_q", leaves[0]}, {"phi_k", leaves[1]}, {"v", leaves[2]}, {"coefficients_q", leaves[3]},
         {"coefficients_k", leaves[4]}});
  }
}

TEST(FusedSeparableLinearAttention, BackwardMatchesAutogradOfMaterialisedFeaturesAcrossTiles) {
  // M 3, J 4; then the models' M 16, J 11 (2K + 1), whose features span whole and partial vectors
  // on every instruction set
  for (auto [causal, M, J] : {std::tuple<bool, int64_t, int64_t>{false, 3, 4}, {true, 3, 4}, {false, 16, 11},
                              {true, 16, 11}}) {
    const SeparableInputs x = make_inputs(3, 70, causal ? 70 : 131, 2, M, J, 5);
    const at::Tensor weights = at::randn({3, 70, 2, 5}, make_generator(7), at::kDouble);
    std::vector<at::Tensor> fused, reference;
    for (auto* grads : {&fused, &reference}) {
      std::vector<at::Tensor> in;
      for (const at::Tensor& t : {x.phi_q, x.phi_k, x.v, x.c_q, x.c_k}) in.push_back(t.clone().requires_grad_());
      const at::Tensor out = grads == &fused ? ops::separable_linear_numerator(in[0], in[1], in[2], in[3], in[4], causal)
                                             : numerator_materialised(in[0], in[1], in[2], in[3], in[4], causal);
      (out * weights).sum().backward();
      for (const at::Tensor& t : in) grads->push_back(t.grad());
    }
    for (size_t i = 0; i < fused.size(); ++i)
      EXPECT_LT(testing::relative_error(fused[i], reference[i]), 1e-10)
          << "input " << i << (causal ? ", causal" : "") << ", M " << M << ", J " << J;
  }
}

TEST(FusedSeparableLinearAttention, BadInputsAreClearErrors) {
  const SeparableInputs x = make_inputs(2, 6, 6, 2, 3, 4, 5);
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q, x.phi_k, x.v, x.c_q, x.c_k.narrow(3, 0, 3)),
                        "coefficients_k");
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q, x.phi_k, x.v, x.c_q.narrow(0, 0, 5), x.c_k),
                        "coefficients_q");
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q, x.phi_k, x.v.narrow(1, 0, 5), x.c_q, x.c_k),
                        "must agree with phi_k");
  const SeparableInputs cross = make_inputs(2, 6, 5, 2, 3, 4, 5);
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(cross.phi_q, cross.phi_k, cross.v, cross.c_q, cross.c_k, true),
                        "causal attention needs as many keys as queries, got 5 and 6");
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q, x.phi_k.to(at::kFloat), x.v, x.c_q, x.c_k),
                        "share a dtype");
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q.flatten(2), x.phi_k, x.v, x.c_q, x.c_k), "expected phi_q");
  EXPECT_ERROR_CONTAINS(ops::separable_linear_numerator(x.phi_q.to(at::kLong), x.phi_k.to(at::kLong), x.v.to(at::kLong),
                                                        x.c_q.to(at::kLong), x.c_k.to(at::kLong)),
                        "float32 or float64");
}

}  // namespace
}  // namespace spe
