#include "spe/data/image.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>

#include "spe/util/files.h"

namespace spe::data {
namespace {

std::string gunzip(const std::string& bytes, const std::string& path) {
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 32) != Z_OK) throw std::runtime_error("cannot initialise zlib");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  stream.avail_in = static_cast<uInt>(bytes.size());
  std::string out;
  char buffer[1 << 16];
  int status = Z_OK;
  while (status == Z_OK) {
    stream.next_out = reinterpret_cast<Bytef*>(buffer);
    stream.avail_out = sizeof buffer;
    status = inflate(&stream, Z_NO_FLUSH);
    out.append(buffer, sizeof buffer - stream.avail_out);
    if (status == Z_BUF_ERROR && stream.avail_in == 0) break;
  }
  inflateEnd(&stream);
  if (status != Z_STREAM_END)
    throw std::runtime_error(fmt::format("'{}' is not a complete gzip file ({})", path, stream.msg ? stream.msg : "truncated"));
  return out;
}

const char* kClassNames[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

}  // namespace

IdxArray read_idx(const std::string& path) {
  std::string bytes = read_file(path);
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f && static_cast<unsigned char>(bytes[1]) == 0x8b)
    bytes = gunzip(bytes, path);
  auto u8 = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  if (bytes.size() < 4 || u8(0) != 0 || u8(1) != 0 || u8(2) != 0x08)
    throw std::runtime_error(fmt::format("'{}' is not an IDX file of unsigned bytes", path));
  const size_t dims = u8(3);
  if (dims == 0 || dims > 4 || bytes.size() < 4 + 4 * dims)
    throw std::runtime_error(fmt::format("'{}': {} dimensions in an IDX header of {} bytes", path, dims, bytes.size()));
  IdxArray array;
  const size_t header = 4 + 4 * dims;
  uint64_t count = 1;  // saturates at 2^64 - 1 instead of wrapping around
  for (size_t d = 0; d < dims; ++d) {
    const size_t at = 4 + 4 * d;
    const uint64_t size = (uint64_t{u8(at)} << 24) | (uint64_t{u8(at + 1)} << 16) | (uint64_t{u8(at + 2)} << 8) | u8(at + 3);
    array.shape.push_back(static_cast<int64_t>(size));
    if (__builtin_mul_overflow(count, size, &count)) count = UINT64_MAX;
  }
  if (bytes.size() - header != count)
    throw std::runtime_error(fmt::format("'{}': the header promises {} values, the file holds {}", path, count,
                                         bytes.size() - header));
  array.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return array;
}

std::array<Dataset, 3> make_fashion_mnist(const ImageOptions& o) {
  auto load = [&](const std::string& prefix) {
    const IdxArray images = read_idx(o.dir + "/" + prefix + "-images-idx3-ubyte.gz");
    const IdxArray labels = read_idx(o.dir + "/" + prefix + "-labels-idx1-ubyte.gz");
    if (images.shape.size() != 3 || images.shape[1] != 28 || images.shape[2] != 28 || labels.shape.size() != 1 ||
        labels.shape[0] != images.shape[0])
      throw std::runtime_error(fmt::format("'{}/{}-*': expected N x 28 x 28 images with N labels", o.dir, prefix));
    return std::make_pair(images, labels);
  };
  const auto [train_images, train_labels] = load("train");
  const auto [test_images, test_labels] = load("t10k");
  const int64_t available = train_images.shape[0];
  if (o.valid < 1 || o.valid >= available || o.train < 0 || o.test < 0)
    throw std::invalid_argument(fmt::format("fashion-mnist: valid {} must lie in [1, {}); train and test must be >= 0",
                                            o.valid, available));
  std::vector<int64_t> order(static_cast<size_t>(available));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  std::shuffle(order.begin(), order.end(), rng);
  DatasetInfo info;
  info.task = "image";
  info.vocab_size = 257;
  info.num_classes = 10;
  info.grid = {28, 28};
  info.class_names.assign(kClassNames, kClassNames + 10);
  info.source = fmt::format("Fashion-MNIST from {} (valid: {} training images drawn with seed {})", o.dir, o.valid, o.seed);
  auto make = [&](const std::string& split, const IdxArray& images, const IdxArray& labels,
                  const std::vector<int64_t>& indices) {
    info.split = split;
    Dataset d(info);
    for (int64_t i : indices) {
      std::vector<uint16_t> tokens(784);
      for (size_t p = 0; p < 784; ++p) tokens[p] = static_cast<uint16_t>(images.values[static_cast<size_t>(i) * 784 + p] + 1);
      const int label = labels.values[static_cast<size_t>(i)];
      if (label > 9) throw std::runtime_error(fmt::format("fashion-mnist: label {} of image {} is not a class", label, i));
      d.add(label, {tokens});
    }
    return d;
  };
  const std::vector<int64_t> valid(order.begin(), order.begin() + o.valid);
  const int64_t train_count = o.train == 0 ? available - o.valid : std::min(o.train, available - o.valid);
  const std::vector<int64_t> train(order.begin() + o.valid, order.begin() + o.valid + train_count);
  std::vector<int64_t> test(static_cast<size_t>(o.test == 0 ? test_images.shape[0] : std::min(o.test, test_images.shape[0])));
  std::iota(test.begin(), test.end(), 0);
  return {make("train", train_images, train_labels, train), make("valid", train_images, train_labels, valid),
          make("test", test_images, test_labels, test)};
}

}  // namespace spe::data
