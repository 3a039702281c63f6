#pragma once
// Feature maps phi for linear attention: phi(q_m) . phi(k_n) replaces exp(q_m . k_n / sqrt(D)).
//   elu:   phi(x) = elu(x) + 1                  (Katharopoulos et al. 2020), M = D
//   relu:  phi(x) = relu(x)                                                  M = D
//   favor: phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(M), x' = x / D^(1/4)       (Choromanski et al.
//          2021, FAVOR+), W: M positive orthogonal random features, so that
//          E[phi(q) . phi(k)] = exp(q . k / sqrt(D)).
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include "spe/random.h"
#include "spe/util/choices.h"

namespace spe {

enum class FeatureMapKind { elu, relu, favor };
inline constexpr Choice<FeatureMapKind> kFeatureMapKinds[] = {
    {"elu", FeatureMapKind::elu}, {"relu", FeatureMapKind::relu}, {"favor", FeatureMapKind::favor}};

// Queries and keys are stabilised differently for FAVOR+ (see FeatureMapImpl::forward).
enum class FeatureRole { query, key };

struct FeatureMapOptions {
  FeatureMapOptions(FeatureMapKind kind, int64_t dim) : kind_(kind), dim_(dim) {}
  TORCH_ARG(FeatureMapKind, kind);
  TORCH_ARG(int64_t, dim);               // D, input features per head
  TORCH_ARG(int64_t, features) = 0;      // M for favor; 0 means M = D
  TORCH_ARG(int64_t, redraw_interval) = 0;  // favor: redraw after every n training steps; 0 = never
  TORCH_ARG(bool, scale_inputs) = true;  // favor: x' = x / D^(1/4) (softmax temperature)
};

class FeatureMapImpl : public torch::nn::Cloneable<FeatureMapImpl> {
 public:
  explicit FeatureMapImpl(const FeatureMapOptions& options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // x: (..., D) -> (..., M). For favor, a query row is shifted by its own max before exp and a
  // key by the constant max_m |w_m|^2 / 2 (a bound on w.x - |x|^2 / 2): both cancel in the
  // normalised attention, keys never overflow, and the key shift does not depend on the data,
  // so batch, causal and token-by-token decoding see identical key features.
  at::Tensor forward(const at::Tensor& x, FeatureRole role);

  // Number of output features M.
  int64_t features() const;
  // Draws new random features (favor; no-op otherwise).
  void redraw(OptionalGenerator generator = c10::nullopt);
  // Call after each training step with the number of steps done in all (resumed ones included):
  // redraws when it is a multiple of redraw_interval, so a resumed run redraws where an
  // uninterrupted one would. Returns whether it redrew.
  bool after_training_step(int64_t steps_done, OptionalGenerator generator = c10::nullopt);

  FeatureMapOptions options;
  at::Tensor projection;  // favor: (M, D) buffer, rows orthogonal within blocks of D
};
TORCH_MODULE(FeatureMap);

// M positive orthogonal random features in D dimensions: blocks of D orthonormal rows (QR of a
// Gaussian matrix), each row rescaled by the norm of an independent N(0, I_D) vector.
// returns (M, D).
at::Tensor orthogonal_random_features(int64_t features, int64_t dim, const at::TensorOptions& options,
                                      OptionalGenerator generator = c10::nullopt);

// phi(x) = exp(x W^T - |x|^2 / 2 - shift) / sqrt(M) without input scaling; shift broadcasts.
at::Tensor favor_features(const at::Tensor& x, const at::Tensor& projection, const at::Tensor& shift);

}  // namespace spe
