// The fused sineSPE filter against the materialised code (sine_code_at + an explicit product),
// forward and backward, with and without the gate, far into a sequence and across blocks.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "spe/encoding/sine_spe.h"
#include "spe/encoding/spe_filter.h"
#include "spe/ops/sine_spe_filter.h"
#include "support/errors.h"
#include "support/gradcheck.h"
#include "support/tolerance.h"

namespace spe {
namespace {

struct Problem {
  at::Tensor x, f, theta, w, a, c;
};

Problem make_problem(int64_t B, int64_t N, int64_t H, int64_t D, int64_t K, int64_t R, at::ScalarType dtype) {
  auto g = make_generator(17);
  return {at::randn({B, N, H, D}, g, dtype),        at::rand({H, D, K}, g, at::kDouble) * 0.5,
          at::randn({H, D, K}, g, at::kDouble),     at::randn({H, D, 2 * K, R}, g, dtype),
          at::rand({H, D}, g, dtype),               at::randn({H, D, R}, g, dtype)};
}

// The reference: materialise the code at positions first .. first+N-1, then sum over d.
at::Tensor reference(const Problem& p, bool gated, int64_t first, bool query_side) {
  SineCodeFactors factors{p.f, p.theta, p.w, gated ? p.a : at::Tensor(), gated ? p.c : at::Tensor(), 0};
  auto positions = at::arange(first, first + p.x.size(1), at::kLong);
  auto [qbar, kbar] = sine_code_at(factors, positions);
  return at::einsum("bnhd,nhdr->bnhr", {p.x, query_side ? qbar : kbar});
}

// A phase 2 pi f n + theta far into a sequence is itself only known to about one ulp of its
// size; the tolerance includes that conditioning: ulp(2 pi f_max n) times the output's scale.
double tolerance(const Problem& p, int64_t first) {
  const double phase = 2 * M_PI * p.f.max().item<double>() * (first + p.x.size(1));
  const double amplitude = p.x.abs().sum(-1).max().item<double>() * p.w.abs().sum(2).max().item<double>();
  return 1e-10 + 4 * phase * 1.1e-16 * amplitude;
}

TEST(FusedSineSPEFilter, MatchesTheMaterialisedCode) {
  for (bool gated : {false, true})
    for (int64_t first : {0, 100000}) {
      Problem p = make_problem(3, 2100, 2, 5, 3, 7, at::kDouble);  // 2100 positions: two exact re-evaluations
      at::Tensor got = ops::sine_spe_filter(p.x, p.f, p.theta, p.w, gated ? p.a : at::Tensor(),
                                            gated ? p.c : at::Tensor(), first);
      EXPECT_LT((got - reference(p, gated, first, true)).abs().max().item<double>(), tolerance(p, first))
          << "gated " << gated << " first " << first;
    }
  // float32: relative to the output's scale
  Problem p = make_problem(2, 300, 3, 8, 5, 16, at::kFloat);
  at::Tensor got = ops::sine_spe_filter(p.x, p.f, p.theta, p.w, p.a, p.c, 5000).to(at::kDouble);
  Problem p64{p.x.to(at::kDouble), p.f, p.theta, p.w.to(at::kDouble), p.a.to(at::kDouble), p.c.to(at::kDouble)};
  at::Tensor want = reference(p64, true, 5000, true);
  EXPECT_LT((got - want).abs().max().item<double>() / want.abs().max().item<double>(), 1e-4);
}

// The gradients of sum(out * grad) with respect to x, f, theta, W, a, c (gated, positions from
// `first`): through the fused op, or by autograd through the materialised code.
std::vector<at::Tensor> gradients(const Problem& base, const at::Tensor& grad, bool fused, int64_t first) {
  Problem p = base;
  std::vector<at::Tensor*> leaves{&p.x, &p.f, &p.theta, &p.w, &p.a, &p.c};
  for (at::Tensor* t : leaves) *t = t->clone().requires_grad_();
  at::Tensor out =
      fused ? ops::sine_spe_filter(p.x, p.f, p.theta, p.w, p.a, p.c, first) : reference(p, true, first, true);
  (out * grad).sum().backward();
  std::vector<at::Tensor> grads;
  for (at::Tensor* t : leaves) grads.push_back(t->grad().to(at::kDouble));
  return grads;
}

// The fused backward of `p` (any dtype) against autograd of the reference in float64, each
// gradient to `tolerance` relative to its largest entry.
void expect_backward_matches(const Problem& p, double tolerance, int64_t first = 7) {
  auto g = make_generator(23);
  const at::Tensor grad = at::randn({p.x.size(0), p.x.size(1), p.x.size(2), p.w.size(3)}, g, at::kDouble);
  const Problem p64{p.x.to(at::kDouble), p.f, p.theta, p.w.to(at::kDouble), p.a.to(at::kDouble), p.c.to(at::kDouble)};
  const std::vector<at::Tensor> fused = gradients(p, grad.to(p.x.scalar_type()), true, first);
  const std::vector<at::Tensor> want = gradients(p64, grad, false, first);
  const char* names[] = {"x", "frequencies", "phases", "weights", "gate_scale", "gate_shift"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_LT(testing::relative_error(fused[i], want[i]), tolerance)
        << names[i] << " (" << p.x.scalar_type() << ", D " << p.x.size(3) << ", first position " << first << ")";
  }
}

TEST(FusedSineSPEFilter, BackwardMatchesAutogradOfTheMaterialisedCode) {
  expect_backward_matches(make_problem(2, 70, 2, 3, 2, 5, at::kDouble), 1e-10);
}

// D = R = 64, K = 5: the kernel's vector paths (register blocks of 6 rows and 4 vectors, 16 x 16
// transposes); 40 positions: two full tiles of 16 and a partial one.
TEST(FusedSineSPEFilter, MatchesAtModelSizes) {
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    const Problem p = make_problem(2, 40, 2, 64, 5, 64, dtype);
    const double tolerance = dtype == at::kDouble ? 1e-10 : 1e-4;
    const Problem p64{p.x.to(at::kDouble), p.f, p.theta, p.w.to(at::kDouble), p.a.to(at::kDouble), p.c.to(at::kDouble)};
    const at::Tensor got = ops::sine_spe_filter(p.x, p.f, p.theta, p.w, p.a, p.c, 7).to(at::kDouble);
    const at::Tensor want = reference(p64, true, 7, true);
    EXPECT_LT((got - want).abs().max().item<double>(), tolerance * want.abs().max().item<double>()) << dtype;
    expect_backward_matches(p, tolerance);
  }
}

// float32 over a long sequence far from its start: the gradients of the frequencies sum terms
// weighted by positions in the thousands over 4096 positions.
TEST(FusedSineSPEFilter, Float32BackwardOverALongSequence) {
  expect_backward_matches(make_problem(2, 4096, 1, 8, 5, 16, at::kFloat), 1e-4, 5000);
}

TEST(FusedSineSPEFilter, GradientCheck) {
  Problem p = make_problem(2, 4, 1, 2, 2, 3, at::kDouble);
  for (at::Tensor* t : {&p.x, &p.f, &p.theta, &p.w, &p.a, &p.c}) t->requires_grad_();
  at::Tensor w = at::randn({2, 4, 1, 3}, at::kDouble);
  testing::expect_gradients_match([&] { return (ops::sine_spe_filter(p.x, p.f, p.theta, p.w, p.a, p.c, 3) * w).sum(); },
                                  {{"x", p.x}, {"frequencies", p.f}, {"phases", p.theta}, {"weights", p.w},
                                   {"gate_scale", p.a}, {"gate_shift", p.c}});
}

TEST(FusedSineSPEFilter, ModulesTakeTheFusedPathAndAgreeWithTheMaterialisedOne) {
  const int64_t B = 2, N = 40, H = 2, D = 4, R = 8;
  at::manual_seed(2);
  SineSPE spe(SineSPEOptions(H, D).sines(3).realizations(R));
  SPEFilter filter(SPEFilterOptions(H, D).gated(true));
  spe->to(at::kDouble);
  filter->to(at::kDouble);
  at::Tensor q = at::randn({B, N, H, D}, at::kDouble), k = at::randn({B, N, H, D}, at::kDouble);
  at::Tensor wq = at::randn({B, N, H, R}, at::kDouble), wk = at::randn({B, N, H, R}, at::kDouble);
  std::vector<std::vector<at::Tensor>> grads;
  for (bool fused : {true, false}) {
    for (auto& p : spe->parameters()) p.mutable_grad().reset();
    filter->gate.mutable_grad().reset();
    SPECode code = spe->forward(N, c10::nullopt, make_generator(3));
    ASSERT_FALSE(code.materialised());
    std::pair<at::Tensor, at::Tensor> out;
    if (fused) {
      out = filter->forward(q, k, code, make_generator(4));
    } else {
      SPECode gated = filter->apply_gate(code.materialise(), make_generator(4));
      out = {spe_apply_code(q, gated.qbar), spe_apply_code(k, gated.kbar)};
    }
    ((out.first * wq).sum() + (out.second * wk).sum()).backward();
    grads.push_back({spe->freqs.grad(), spe->offsets.grad(), spe->gains.grad(), filter->gate.grad()});
  }
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-9, 1e-11)) << "parameter " << i;
}

// Decoding's one-position filter, from the rows made once and the coefficients of the position,
// against the materialised code at that position, both sides, with and without the gate.
TEST(FusedSineSPEFilter, OnePositionFromPreparedPartsMatchesTheMaterialisedCode) {
  at::NoGradGuard no_grad;
  for (auto [dtype, D, K, R] : {std::tuple{at::kDouble, 5, 3, 7}, std::tuple{at::kFloat, 64, 5, 64}})
    for (bool gated : {false, true})
      for (int64_t n : {0, 5, 100000}) {
        const Problem p = make_problem(3, 1, 2, D, K, R, dtype);
        const SineCodeFactors factors{p.f, p.theta, p.w, gated ? p.a : at::Tensor(), gated ? p.c : at::Tensor(), 200000};
        const at::Tensor rows = sine_step_rows(factors), coefficients = sine_step_coefficients(factors, n);
        ASSERT_EQ(rows.sizes(), at::IntArrayRef({2, D, 2 * K + 1, R}));
        ASSERT_EQ(coefficients.sizes(), at::IntArrayRef({2, 2, D, 2 * K + 1}));
        const Problem p64{p.x.to(at::kDouble), p.f, p.theta, p.w.to(at::kDouble), p.a.to(at::kDouble), p.c.to(at::kDouble)};
        for (bool query_side : {true, false}) {
          const at::Tensor got = ops::sine_spe_filter_position(p.x, coefficients[query_side ? 0 : 1], rows);
          const at::Tensor want = reference(p64, gated, n, query_side);
          const double scale = dtype == at::kDouble ? tolerance(p64, n) : 1e-5 * want.abs().max().item<double>();
          EXPECT_LT((got.to(at::kDouble) - want).abs().max().item<double>(), scale)
              << dtype << " gated " << gated << " position " << n << " query side " << query_side;
        }
      }
}

TEST(FusedSineSPEFilter, OnePositionBadInputIsNamed) {
  at::NoGradGuard no_grad;
  Problem p = make_problem(1, 1, 2, 3, 2, 5, at::kFloat);
  const SineCodeFactors factors{p.f, p.theta, p.w, p.a, p.c, 10};
  const at::Tensor rows = sine_step_rows(factors), coefficients = sine_step_coefficients(factors, 9)[0];
  EXPECT_ERROR_CONTAINS(sine_step_coefficients(factors, 10), "position 10 is outside the code's 10 positions");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter_position(at::cat({p.x, p.x}, 1), coefficients, rows), "x must be (B, 1, H, D)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter_position(p.x, coefficients.narrow(2, 0, 4), rows), "coefficients must be (H, D, 2K + 1)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter_position(p.x, coefficients, rows.narrow(2, 0, 3)), "rows must be (H, D, 2K + 1, R) = (2, 3, 5, R)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter_position(p.x, coefficients.to(at::kDouble), rows), "must have x's dtype Float");
  at::GradMode::set_enabled(true);
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter_position(p.x.requires_grad_(), coefficients, rows), "forward only");
  at::GradMode::set_enabled(false);
}

TEST(FusedSineSPEFilter, BadInputIsNamed) {
  Problem p = make_problem(1, 4, 2, 3, 2, 5, at::kFloat);
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f.to(at::kFloat), p.theta, p.w, {}, {}), "frequencies and phases must be float64");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f, p.theta, p.w.narrow(2, 0, 3), {}, {}), "weights must be (H, D, 2K, R) = (2, 3, 4, R)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f.narrow(0, 0, 1), p.theta, p.w, {}, {}), "frequencies must be (H, D, K) = (2, 3, K)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f, p.theta, p.w.to(at::kDouble), {}, {}), "weights are Double but x is Float");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f, p.theta, p.w, p.a.narrow(1, 0, 2), {}), "gate_scale must be (H, D) = (2, 3)");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, p.f, p.theta, p.w, {}, {}, -1), "first_position must be >= 0, got -1");
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x[0], p.f, p.theta, p.w, {}, {}), "x must be (B, N, H, D)");
  SineCodeFactors short_code{p.f, p.theta, p.w, {}, {}, 3};
  EXPECT_ERROR_CONTAINS(ops::sine_spe_filter(p.x, short_code, true), "4 positions from row 0 exceed the code length 3");
}

}  // namespace
}  // namespace spe
