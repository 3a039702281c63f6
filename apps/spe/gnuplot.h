#pragma once
// Plots through gnuplot (Debian's gnuplot-nox, pngcairo terminal), written atomically.
#include <string>

namespace spe::cli {

// A string in gnuplot's single-quoted syntax.
std::string gnuplot_quote(const std::string& s);

// Renders `commands` (plots with their inline data; no terminal or output settings) to a PNG of
// width x height pixels at png_path: gnuplot writes a temporary file that is renamed when done.
// Throws with a clear message when gnuplot is missing or fails.
void plot_png(const std::string& png_path, const std::string& commands, int width, int height);

}  // namespace spe::cli
