#pragma once
// Damaged copies of a real file: every truncation point and a set of byte flips, each handed to
// a reader, which must refuse it with an error naming the file or (where the format allows it)
// read it as the valid file it has become; never crash, hang or return what it should not.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace spe::testing {

// What a damaged copy may do besides being refused.
enum class Damage {
  always_refused,    // checksummed formats (datasets, checkpoints): every damaged copy is an error
  cuts_refused,      // formats that state their lengths (IDX): every truncation is an error
  may_stay_valid,    // text (YAML, JSONL, CSV): a cut or flip can leave a valid file
};

// A reader of files, and where each damaged copy is written before it is read.
struct Reader {
  std::function<void(const std::string& path)> read;
  std::string path;
};

// Reads one copy: "" when it reads, else the error message.
inline std::string read_outcome(const Reader& reader, const std::string& bytes) {
  std::ofstream(reader.path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  try {
    reader.read(reader.path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The truncation points tried: all of them for files up to 16 KiB; for larger ones (each copy is
// written out) the first and last 2 KiB of them and 4,096 spread evenly between.
inline std::vector<size_t> cut_points(size_t size) {
  std::vector<size_t> cuts;
  constexpr size_t kAll = 16384, kEnds = 2048, kBetween = 4096;
  for (size_t cut = 0; cut < size; ++cut) {
    const bool near_an_end = cut < kEnds || cut + kEnds >= size;
    if (size <= kAll || near_an_end || (cut - kEnds) % ((size - 2 * kEnds) / kBetween + 1) == 0) cuts.push_back(cut);
  }
  return cuts;
}

// Every truncation of `bytes` (see cut_points) and `flips` flips of one random byte to another
// value, each read within `seconds` seconds.
inline void expect_damage_handled(const std::string& bytes, const Reader& reader, Damage damage, int flips = 300,
                                  double seconds = 5.0) {
  ASSERT_EQ(read_outcome(reader, bytes), "") << "the undamaged file must read";
  auto check = [&](const std::string& copy, const std::string& what, bool must_fail) {
    const auto start = std::chrono::steady_clock::now();
    const std::string error = read_outcome(reader, copy);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(elapsed, seconds) << what;
    if (must_fail) {
      EXPECT_NE(error, "") << what << " was read as a valid file";
    }
    if (!error.empty()) {
      EXPECT_NE(error.find(reader.path), std::string::npos) << what << ": '" << error << "' does not name the file";
    }
  };
  for (size_t cut : cut_points(bytes.size()))
    check(bytes.substr(0, cut), "the first " + std::to_string(cut) + " bytes", damage != Damage::may_stay_valid);
  std::mt19937_64 rng(12345);
  for (int f = 0; f < flips; ++f) {
    std::string copy = bytes;
    const size_t at = rng() % bytes.size();
    copy[at] = static_cast<char>(copy[at] ^ (1 + rng() % 255));
    check(copy, "a flip at byte " + std::to_string(at), damage == Damage::always_refused);
  }
}

}  // namespace spe::testing
