#include "spe/train/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <functional>
#include <set>
#include <stdexcept>

#include "spe/util/files.h"

namespace spe::train {
namespace {

template <class T>
const char* type_name() {
  if (std::is_same_v<T, bool>) return "true or false";
  if (std::is_integral_v<T>) return "an integer";
  if (std::is_floating_point_v<T>) return "a number";
  return "a string";
}

// Names and paths are text: a control character (a stray carriage return, a tab) is a mistake, and
// one that would not survive writing the configuration out and reading it back.
void check_printable(const std::string& what, const std::string& value) {
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f)
      throw std::invalid_argument(
          fmt::format("{}: control character 0x{:02x} at offset {} of '{}'; expected printable text", what, c, i,
                      value.substr(0, i)));
  }
}

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  return node.IsSequence() ? "a list" : node.IsMap() ? "a section" : "nothing";
}

// Binds the configuration's fields to a YAML map, in one of two directions: reading a map into
// the fields (every key must be known; values are type-checked) or writing the fields out.
class Binder {
 public:
  static Binder reader(const YAML::Node& node, const std::string& path) { return Binder(node, path, true); }
  static Binder writer(YAML::Node& node) { return Binder(node, "", false); }

  template <class T>
  void field(const char* key, T& value) {
    if (!reading_) {
      if constexpr (std::is_floating_point_v<T>)
        node_[key] = fmt::format("{}", value);  // the shortest text that reads back exactly
      else
        node_[key] = value;
      return;
    }
    used_.insert(key);
    const YAML::Node item = node_[key];
    if (!item) return;
    const auto wrong_type = [&] {
      return std::invalid_argument(fmt::format("{}: expected {}, got {}", name(key), type_name<T>(), describe(item)));
    };
    if (!item.IsScalar()) throw wrong_type();
    try {
      value = item.as<T>();
    } catch (const YAML::Exception&) {
      throw wrong_type();
    }
    if constexpr (std::is_same_v<T, std::string>) check_printable(name(key), value);
  }

  template <class Enum, size_t N>
  void choice(const char* key, Enum& value, const Choice<Enum> (&table)[N]) {
    std::string text = reading_ ? "" : choice_name(value, table);
    field(key, text);
    if (reading_ && node_[key]) value = parse_choice(name(key), text, table);
  }

  void section(const char* key, const std::function<void(Binder&)>& bind) {
    if (!reading_) {
      YAML::Node child(YAML::NodeType::Map);
      Binder binder(child, "", false);
      bind(binder);
      node_[key] = child;
      return;
    }
    used_.insert(key);
    Binder binder(node_[key] ? node_[key] : YAML::Node(YAML::NodeType::Map), name(key), true);
    bind(binder);
    binder.finish();
  }

  // Reading: every key of the map must have been asked for.
  void finish() const {
    for (const auto& item : node_) {
      const std::string key = item.first.as<std::string>();
      if (!used_.count(key)) {
        std::string allowed;
        for (const auto& k : used_) allowed += (allowed.empty() ? "" : ", ") + k;
        throw std::invalid_argument(fmt::format("unknown key '{}'; allowed here: {}", name(key.c_str()), allowed));
      }
    }
  }

 private:
  Binder(YAML::Node node, std::string path, bool reading) : node_(std::move(node)), path_(std::move(path)), reading_(reading) {
    if (reading_ && !node_.IsMap() && !node_.IsNull())
      throw std::invalid_argument(fmt::format("{}: expected a section of keys, got {}", path_.empty() ? "the configuration" : path_,
                                              describe(node_)));
  }
  std::string name(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  YAML::Node node_;
  std::string path_;
  bool reading_;
  std::set<std::string> used_;
};

void bind_model(Binder& b, nn::ModelOptions& m) {
  nn::TransformerOptions& t = m.transformer();
  b.choice("kind", m.kind(), nn::kModelKinds);
  b.choice("pooling", m.pooling(), nn::kPoolings);
  b.field("tie_embeddings", m.tie_embeddings());
  b.field("dim", t.dim());
  b.field("heads", t.heads());
  b.field("layers", t.layers());
  b.field("ffn_dim", t.ffn_dim());
  b.field("dropout", t.dropout());
  b.section("attention", [&](Binder& a) {
    a.choice("kind", t.attention().kind(), nn::kAttentionKinds);
    a.choice("feature_map", t.attention().feature_map(), nn::kLinearFeatureMaps);
    a.field("features", t.attention().features());
    a.field("redraw_interval", t.attention().redraw_interval());
  });
  b.section("positional", [&](Binder& p) {
    nn::PositionalOptions& o = t.positional();
    p.choice("kind", o.kind(), nn::kPositionalKinds);
    p.field("realizations", o.realizations());
    p.field("sines", o.sines());
    p.field("kernel_size", o.kernel_size());
    p.field("conv_ndim", o.conv_ndim());
    p.field("gated", o.gated());
    p.field("gate_mean", o.gate_mean());
    p.field("shared_code", o.shared_code());
    p.field("clip", o.clip());
    p.field("max_length", o.max_length());
    p.choice("place", o.place(), nn::kPositionalPlaces);
    p.choice("code", o.code(), nn::kSPECodeKinds);
    p.choice("init", o.init(), kSineInits);
    p.choice("noise", o.noise(), kSPENoises);
    p.field("learnable_decay", o.learnable_decay());
  });
}

void bind_train(Binder& b, TrainConfig& t) {
  b.field("seed", t.seed);
  b.field("steps", t.steps);
  b.field("batch_size", t.batch_size);
  b.field("accumulation", t.accumulation);
  b.field("lr", t.lr);
  b.field("weight_decay", t.weight_decay);
  b.field("beta1", t.beta1);
  b.field("beta2", t.beta2);
  b.field("warmup_steps", t.warmup_steps);
  b.choice("schedule", t.schedule, kSchedules);
  b.field("min_lr_ratio", t.min_lr_ratio);
  b.field("clip_grad_norm", t.clip_grad_norm);
  b.field("eval_every", t.eval_every);
  b.field("eval_batches", t.eval_batches);
  b.field("eval_batch_size", t.eval_batch_size);
  b.field("checkpoint_every", t.checkpoint_every);
  b.field("log_every", t.log_every);
  b.choice("dtype", t.dtype, kPrecisions);
  b.choice("rank_draws", t.rank_draws, kRankDraws);
}

void bind(Binder& b, Config& c) {
  b.field("task", c.task);
  b.section("data", [&](Binder& d) {
    d.field("dir", c.data.dir);
    d.field("max_length", c.data.max_length);
  });
  b.section("model", [&](Binder& m) { bind_model(m, c.model); });
  b.section("train", [&](Binder& t) { bind_train(t, c.train); });
}

void check_config(const Config& c) {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  const TrainConfig& t = c.train;
  require(c.data.max_length >= 1, fmt::format("data.max_length is {}, expected >= 1", c.data.max_length));
  require(t.seed >= 0, fmt::format("train.seed is {}, expected >= 0", t.seed));
  require(t.steps >= 1, fmt::format("train.steps is {}, expected >= 1", t.steps));
  require(t.batch_size >= 1, fmt::format("train.batch_size is {}, expected >= 1", t.batch_size));
  require(t.accumulation >= 1 && t.batch_size % t.accumulation == 0,
          fmt::format("train.accumulation is {}, expected a divisor of train.batch_size ({})", t.accumulation, t.batch_size));
  require(std::isfinite(t.lr) && t.lr > 0, fmt::format("train.lr is {}, expected a positive number", t.lr));
  require(t.weight_decay >= 0, fmt::format("train.weight_decay is {}, expected >= 0", t.weight_decay));
  require(t.beta1 >= 0 && t.beta1 < 1 && t.beta2 >= 0 && t.beta2 < 1,
          fmt::format("train.beta1 and beta2 are {} and {}, expected in [0, 1)", t.beta1, t.beta2));
  require(t.warmup_steps >= 0, fmt::format("train.warmup_steps is {}, expected >= 0", t.warmup_steps));
  require(t.min_lr_ratio >= 0 && t.min_lr_ratio <= 1,
          fmt::format("train.min_lr_ratio is {}, expected in [0, 1]", t.min_lr_ratio));
  require(t.clip_grad_norm >= 0, fmt::format("train.clip_grad_norm is {}, expected >= 0 (0 disables)", t.clip_grad_norm));
  require(t.eval_every >= 1, fmt::format("train.eval_every is {}, expected >= 1", t.eval_every));
  require(t.eval_batches >= 0, fmt::format("train.eval_batches is {}, expected >= 0 (0: all)", t.eval_batches));
  require(t.eval_batch_size >= 1, fmt::format("train.eval_batch_size is {}, expected >= 1", t.eval_batch_size));
  require(t.checkpoint_every >= 1, fmt::format("train.checkpoint_every is {}, expected >= 1", t.checkpoint_every));
  require(t.log_every >= 1, fmt::format("train.log_every is {}, expected >= 1", t.log_every));
  try {
    nn::TransformerOptions model = c.model.transformer();
    if (model.grid().empty()) model.grid({1, 1});  // the grid comes with the data; its shape is checked then
    nn::check_transformer_options(model);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("model: ") + e.what());
  }
}

void apply_override(YAML::Node& root, const std::string& text) {
  const size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0)
    throw std::invalid_argument(fmt::format("override '{}' is not of the form key.path=value", text));
  const std::string path = text.substr(0, equals), value = text.substr(equals + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(fmt::format("override '{}': the value is not valid YAML ({})", text, e.msg));
  }
  if (!parsed || parsed.IsNull()) throw std::invalid_argument(fmt::format("override '{}' has no value", text));
  YAML::Node node = root;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (key.empty()) throw std::invalid_argument(fmt::format("override '{}': empty key in '{}'", text, path));
    if (dot == std::string::npos) {
      node[key] = parsed;
      return;
    }
    if (!node[key] || !node[key].IsMap()) node[key] = YAML::Node(YAML::NodeType::Map);
    node.reset(node[key]);
    start = dot + 1;
  }
}

// The YAML text of what `write` binds (the binder only reads the fields in this direction).
std::string emit(const std::function<void(Binder&)>& write) {
  YAML::Node root(YAML::NodeType::Map);
  Binder binder = Binder::writer(root);
  write(binder);
  YAML::Emitter out;
  out << root;
  return out.c_str();
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(fmt::format("{}: not valid YAML at line {}, column {}: {}", name, e.mark.line + 1,
                                            e.mark.column + 1, e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  Config config;
  try {
    if (!root.IsMap())
      throw std::invalid_argument(fmt::format("expected a section of keys at the top, got {}", describe(root)));
    for (const auto& o : overrides) apply_override(root, o);
    Binder binder = Binder::reader(root, "");
    bind(binder, config);
    binder.finish();
    check_config(config);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", name, e.what()));
  } catch (const YAML::Exception& e) {  // e.g. a key that is itself a list or a section
    throw std::invalid_argument(fmt::format("{}: line {}, column {}: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  return parse_config(path.empty() ? std::string() : read_file(path), overrides, path.empty() ? "<defaults>" : path);
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  return emit([&](Binder& b) { bind(b, copy); }) + "\n";
}

std::string model_yaml(const Config& config) {
  Config copy = config;
  return emit([&](Binder& b) { b.section("model", [&](Binder& m) { bind_model(m, copy.model); }); });
}

double learning_rate(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, t.steps - t.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - t.warmup_steps) / decay_steps);
  const double floor = t.min_lr_ratio;
  switch (t.schedule) {
    case Schedule::constant:
      return t.lr;
    case Schedule::cosine:
      return t.lr * (floor + (1 - floor) * 0.5 * (1 + std::cos(M_PI * progress)));
    case Schedule::linear:
      return t.lr * (floor + (1 - floor) * (1 - progress));
    case Schedule::inverse_sqrt:
      return t.lr * std::sqrt(static_cast<double>(std::max<int64_t>(1, t.warmup_steps)) / static_cast<double>(step + 1));
  }
  throw std::logic_error("learning_rate: unknown schedule");
}

}  // namespace spe::train
