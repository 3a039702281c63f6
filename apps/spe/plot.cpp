// `spe plot`: learning curves from the metrics.jsonl of one or more runs, as a PNG.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "gnuplot.h"

namespace spe::cli {
namespace {

struct Curves {
  std::string name;
  std::string data[2][2];  // [train, valid][loss, accuracy]: "step value" lines
};

// The run's name is its folder's name; a line that is not JSON is an error naming the line.
Curves read_metrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("cannot open the metrics file '{}'", path));
  Curves c;
  const std::string folder = std::filesystem::absolute(path).parent_path().filename().string();
  c.name = folder.empty() ? path : folder;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object() || !record.contains("step") || !record.contains("split"))
      throw std::runtime_error(fmt::format("{}:{}: not a metrics record (JSON with step and split)", path, line_number));
    const int split = record["split"] == "train" ? 0 : record["split"] == "valid" ? 1 : -1;
    if (split < 0) continue;
    const char* keys[2] = {"loss", "accuracy"};
    for (int k = 0; k < 2; ++k)
      if (record.contains(keys[k]) && record[keys[k]].is_number())
        c.data[split][k] += fmt::format("{} {}\n", record["step"].get<int64_t>(), record[keys[k]].get<double>());
  }
  return c;
}

}  // namespace

void plot_learning_curves(const std::vector<std::string>& metrics_paths, const std::string& png,
                          const std::string& title, bool validation_only) {
  std::vector<Curves> runs;
  for (const auto& path : metrics_paths) runs.push_back(read_metrics(path));
  std::string script = fmt::format(
      "set termoption noenhanced\nset multiplot layout 1,2 title {}\nset xlabel 'step'\nset grid\nset key below\n",
      gnuplot_quote(title));
  const char* labels[2] = {"loss", "accuracy"};
  for (int k = 0; k < 2; ++k) {
    script += fmt::format("set ylabel '{}'\nset title '{}'\nplot ", labels[k], labels[k]);
    std::string data;
    bool first = true;
    for (size_t r = 0; r < runs.size(); ++r)
      for (int split = validation_only ? 1 : 0; split < 2; ++split) {
        script += first ? "" : ", ";
        first = false;
        script += fmt::format("'-' using 1:2 with {} lc {} title {}", split ? "linespoints pt 7" : "lines", r + 1,
                              gnuplot_quote(runs[r].name + (split ? " valid" : " train")));
        data += (runs[r].data[split][k].empty() ? "nan nan\n" : runs[r].data[split][k]) + "e\n";
      }
    script += "\n" + data;
  }
  script += "unset multiplot\n";
  plot_png(png, script, 1300, validation_only ? 700 : 600);
}

void add_plot_command(CLI::App& app) {
  struct Args {
    std::vector<std::string> metrics;
    std::string png, title = "learning curves";
    bool validation_only = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("plot", "learning curves (loss and accuracy, train and valid) of runs as a PNG");
  sub->add_option("--metrics", a->metrics, "metrics.jsonl of each run")->required();
  sub->add_option("--png", a->png, "output image")->required();
  sub->add_option("--title", a->title, "plot title")->capture_default_str();
  sub->add_flag("--validation-only", a->validation_only, "only the validation curves (for many runs)");
  sub->callback([a] {
    plot_learning_curves(a->metrics, a->png, a->title, a->validation_only);
    std::cerr << "wrote " << a->png << "\n";
  });
}

}  // namespace spe::cli
