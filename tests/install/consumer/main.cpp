// A user's program against the installed spe: gated sineSPE and causal linear attention, checked
// against the layer's own token-by-token form so that a broken install cannot pass silently.
#include <spe/attention/feature_maps.h>
#include <spe/attention/linear.h>
#include <spe/encoding/sine_spe.h>
#include <spe/encoding/spe_filter.h>
#include <spe/random.h>
#include <spe/version.h>

#include <iostream>

int main() {
  const int64_t B = 1, N = 16, H = 2, D = 8, R = 16;
  auto gen = spe::make_generator(0);
  auto q = at::randn({B, N, H, D}, gen), k = at::randn({B, N, H, D}, gen), v = at::randn({B, N, H, D}, gen);
  spe::SineSPE encoding(spe::SineSPEOptions(H, D).sines(3).realizations(R));
  spe::SPEFilter filter(spe::SPEFilterOptions(H, D).gated(true));
  auto [qhat, khat] = filter->forward(q, k, encoding->forward(N, c10::nullopt, gen), gen);  // (B, N, H, R)
  spe::FeatureMap phi(spe::FeatureMapOptions(spe::FeatureMapKind::elu, R));
  auto phi_q = phi->forward(qhat, spe::FeatureRole::query), phi_k = phi->forward(khat, spe::FeatureRole::key);
  auto out = spe::causal_linear_attention(phi_q, phi_k, v);  // (B, N, H, D)
  auto state = spe::LinearAttentionState::zeros(B, H, R, D, v.options());
  for (int64_t t = 0; t < N; ++t) {
    auto out_t = spe::causal_linear_attention_step(phi_q.select(1, t), phi_k.select(1, t), v.select(1, t), state);
    if (!at::allclose(out_t, out.select(1, t), 1e-4, 1e-5)) {
      std::cerr << "consumer: the recurrent step differs from the batch form at position " << t << "\n";
      return 1;
    }
  }
  std::cout << "spe " << spe::version() << " installed: output " << out.sizes() << "\n";
  return 0;
}
