#include "spe/midi/midi_file.h"

#include <fmt/format.h>

#include "spe/util/files.h"

namespace spe::midi {
namespace {

// Ticks beyond this are refused: no real file comes near, and it keeps every later product
// (ticks x grid steps) far from overflow.
constexpr int64_t kMaxTick = int64_t{1} << 40;

// A cursor over the bytes of one file (or one chunk of it) that never reads past its end.
class Reader {
 public:
  Reader(const std::string& bytes, size_t begin, size_t end, const std::string& name, const std::string& where)
      : bytes_(bytes), pos_(begin), end_(end), name_(name), where_(where) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw MidiError(fmt::format("{}: {}at byte {}: {}", name_, where_.empty() ? "" : where_ + " ", pos_, what));
  }
  size_t position() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }
  bool done() const { return pos_ >= end_; }

  uint8_t byte(const char* what) {
    if (done()) fail(fmt::format("truncated: {} expected, the data ends", what));
    return static_cast<uint8_t>(bytes_[pos_++]);
  }
  uint32_t big_endian(int count, const char* what) {
    if (remaining() < static_cast<size_t>(count)) fail(fmt::format("truncated: {} expected, the data ends", what));
    uint32_t value = 0;
    for (int i = 0; i < count; ++i) value = (value << 8) | static_cast<uint8_t>(bytes_[pos_++]);
    return value;
  }
  // A variable-length quantity: 7 bits per byte, at most 4 bytes (28 bits).
  uint32_t vlq(const char* what) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const uint8_t b = byte(what);
      value = (value << 7) | (b & 0x7Fu);
      if ((b & 0x80u) == 0) return value;
    }
    fail(fmt::format("{} is a variable-length quantity of more than 4 bytes", what));
  }
  std::vector<uint8_t> take(uint32_t count, const char* what) {
    if (remaining() < count)
      fail(fmt::format("truncated: {} declares {} bytes, {} remain", what, count, remaining()));
    std::vector<uint8_t> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                             bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + count));
    pos_ += count;
    return out;
  }
  std::string tag() {
    if (remaining() < 4) fail("truncated: a chunk type expected, the data ends");
    pos_ += 4;
    return bytes_.substr(pos_ - 4, 4);
  }

 private:
  const std::string& bytes_;
  size_t pos_, end_;
  const std::string& name_;
  std::string where_;
};

// Data bytes of a channel message by its kind (high nibble).
int data_bytes(uint8_t status) {
  const uint8_t kind = status & 0xF0;
  return kind == 0xC0 || kind == 0xD0 ? 1 : 2;
}

MidiTrack read_track(Reader& in) {
  MidiTrack track;
  int64_t tick = 0;
  uint8_t running = 0;  // the last channel status, for running status
  while (!in.done()) {
    tick += in.vlq("a delta time");
    if (tick > kMaxTick) in.fail(fmt::format("time runs past {} ticks", kMaxTick));
    MidiEvent event;
    event.tick = tick;
    uint8_t first = in.byte("a status byte");
    if (first < 0x80) {
      if (running == 0) in.fail("running status with no previous status byte");
      event.status = running;
      event.data.push_back(first);
      if (data_bytes(running) == 2) event.data.push_back(in.byte("a data byte"));
    } else if (first < 0xF0) {
      event.status = running = first;
      for (int i = 0; i < data_bytes(first); ++i) event.data.push_back(in.byte("a data byte"));
    } else if (first == 0xF0 || first == 0xF7) {
      event.status = first;
      running = 0;
      event.data = in.take(in.vlq("a sysex length"), "a sysex event");
    } else if (first == 0xFF) {
      event.status = first;
      running = 0;
      event.meta_type = in.byte("a meta event type");
      event.data = in.take(in.vlq("a meta event length"), "a meta event");
    } else {
      in.fail(fmt::format("status byte 0x{:02X} is not allowed in a file", first));
    }
    for (uint8_t b : event.data)
      if (event.status < 0xF0 && b >= 0x80) in.fail(fmt::format("data byte 0x{:02X} has its top bit set", b));
    const bool end = event.is_meta(kMetaEndOfTrack);
    track.events.push_back(std::move(event));
    if (end) return track;  // bytes after the end of track inside the chunk are ignored
  }
  in.fail("the track has no end-of-track event");
}

}  // namespace

MidiFile read_midi(const std::string& bytes, const std::string& name) {
  Reader file(bytes, 0, bytes.size(), name, "");
  if (bytes.size() < 4 || bytes.compare(0, 4, "MThd") != 0) file.fail("not a Standard MIDI File (no MThd header)");
  file.tag();
  const uint32_t header_length = file.big_endian(4, "the header length");
  if (header_length < 6) file.fail(fmt::format("the header is {} bytes, expected at least 6", header_length));
  if (file.remaining() < header_length) file.fail("truncated: the header ends early");
  MidiFile out;
  out.format = static_cast<int>(file.big_endian(2, "the format"));
  const uint32_t tracks = file.big_endian(2, "the track count");
  const uint32_t division = file.big_endian(2, "the time division");
  file.take(header_length - 6, "the rest of the header");
  if (out.format > 2) file.fail(fmt::format("format {} is not 0, 1 or 2", out.format));
  if (out.format == 0 && tracks != 1) file.fail(fmt::format("a format 0 file declares {} tracks, expected 1", tracks));
  if (division & 0x8000u) file.fail("SMPTE time division is not supported (only ticks per quarter note)");
  if (division == 0) file.fail("the time division is 0 ticks per quarter note");
  out.ticks_per_quarter = static_cast<int>(division);
  while (out.tracks.size() < tracks) {
    if (file.done())
      file.fail(fmt::format("truncated: {} tracks declared, {} found", tracks, out.tracks.size()));
    const std::string type = file.tag();
    const uint32_t length = file.big_endian(4, "a chunk length");
    if (file.remaining() < length)
      file.fail(fmt::format("truncated: a {} chunk declares {} bytes, {} remain", type == "MTrk" ? "track" : "chunk",
                            length, file.remaining()));
    const size_t begin = file.position();
    file.take(length, "a chunk");
    if (type != "MTrk") continue;  // unknown chunks are skipped, as the standard asks
    Reader chunk(bytes, begin, begin + length, name, fmt::format("track {}", out.tracks.size() + 1));
    out.tracks.push_back(read_track(chunk));
  }
  return out;
}

namespace {

void put_big_endian(std::string& out, uint32_t value, int count) {
  for (int i = count - 1; i >= 0; --i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void put_vlq(std::string& out, uint64_t value) {
  if (value > 0x0FFFFFFF) throw std::invalid_argument(fmt::format("write_midi: {} does not fit a MIDI quantity", value));
  char groups[4];
  int count = 0;
  do {
    groups[count++] = static_cast<char>(value & 0x7F);
    value >>= 7;
  } while (value != 0);
  for (int i = count - 1; i >= 0; --i) out.push_back(static_cast<char>(groups[i] | (i ? 0x80 : 0)));
}

std::string track_bytes(const MidiTrack& track) {
  std::string out;
  int64_t tick = 0;
  bool ended = false;
  for (const MidiEvent& e : track.events) {
    if (e.tick < tick) throw std::invalid_argument("write_midi: events must be in time order");
    put_vlq(out, static_cast<uint64_t>(e.tick - tick));
    tick = e.tick;
    out.push_back(static_cast<char>(e.status));
    if (e.status == 0xFF) out.push_back(static_cast<char>(e.meta_type));
    if (e.status >= 0xF0) put_vlq(out, e.data.size());
    out.append(e.data.begin(), e.data.end());
    ended = e.is_meta(kMetaEndOfTrack);
  }
  if (!ended) out.append(std::string("\x00\xFF\x2F\x00", 4));
  return out;
}

}  // namespace

std::string write_midi(const MidiFile& file) {
  std::string out = "MThd";
  put_big_endian(out, 6, 4);
  put_big_endian(out, static_cast<uint32_t>(file.format), 2);
  put_big_endian(out, static_cast<uint32_t>(file.tracks.size()), 2);
  put_big_endian(out, static_cast<uint32_t>(file.ticks_per_quarter), 2);
  for (const MidiTrack& track : file.tracks) {
    const std::string body = track_bytes(track);
    out += "MTrk";
    put_big_endian(out, static_cast<uint32_t>(body.size()), 4);
    out += body;
  }
  return out;
}

MidiFile load_midi(const std::string& path) { return read_midi(read_file(path), path); }

void save_midi(const std::string& path, const MidiFile& file) { write_file_atomically(path, write_midi(file)); }

}  // namespace spe::midi
