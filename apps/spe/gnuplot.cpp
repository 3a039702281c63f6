#include "gnuplot.h"

#include <fmt/format.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace spe::cli {

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

void plot_png(const std::string& png_path, const std::string& commands, int width, int height) {
  // One temporary per process: two runs that plot into one folder at once must not share it.
  const std::string temporary = fmt::format("{}.tmp.{}.png", png_path, ::getpid());
  if (!std::ofstream(temporary)) {  // a clear error before gnuplot writes the image anywhere else
    throw std::runtime_error(fmt::format("cannot write '{}': {}", png_path, std::strerror(errno)));
  }
  const std::string script = fmt::format("set terminal pngcairo size {},{} font ',10'\nset output {}\n{}\nset output\n",
                                         width, height, gnuplot_quote(temporary), commands);
  FILE* gnuplot = ::popen("gnuplot > /dev/null", "w");
  if (gnuplot == nullptr) throw std::runtime_error("cannot start gnuplot (install gnuplot-nox)");
  std::fwrite(script.data(), 1, script.size(), gnuplot);
  const int status = ::pclose(gnuplot);
  if (status != 0) {
    std::remove(temporary.c_str());
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
      throw std::runtime_error("gnuplot is not installed: install gnuplot-nox (scripts/setup.sh does)");
    throw std::runtime_error(fmt::format("gnuplot failed (exit status {}) writing '{}'", status, png_path));
  }
  if (std::rename(temporary.c_str(), png_path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temporary.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': {}", png_path, reason));
  }
}

}  // namespace spe::cli
