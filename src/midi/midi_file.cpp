#include "spe/midi/midi_file.h"

#include <fmt/format.h>

#include <algorithm>

#include "spe/util/files.h"

namespace spe::midi {
namespace {

// Ticks beyond this are refused: no real file comes near, and it keeps every later product
// (ticks x grid steps) far from overflow.
constexpr int64_t kMaxTick = int64_t{1} << 40;
constexpr size_t kChunkHeaderBytes = 8;  // a type and a length

// The data ended inside what was being read. A MidiError like any other, except in a track cut
// by the end of the file, where it marks the partial event that is dropped.
class Truncated : public MidiError {
 public:
  using MidiError::MidiError;
};

// A cursor over the bytes of one file (or one chunk of it) that never reads past its end.
class Reader {
 public:
  Reader(const std::string& bytes, size_t begin, size_t end, const std::string& name, const std::string& where)
      : bytes_(bytes), pos_(begin), end_(end), name_(name), where_(where) {}

  [[noreturn]] void fail(const std::string& what) const { throw MidiError(message(what)); }
  [[noreturn]] void truncated(const std::string& what) const { throw Truncated(message("truncated: " + what)); }
  size_t remaining() const { return end_ - pos_; }
  bool done() const { return pos_ >= end_; }

  uint8_t peek(const char* what) const {
    if (done()) truncated(fmt::format("{} expected, the data ends", what));
    return static_cast<uint8_t>(bytes_[pos_]);
  }
  uint8_t byte(const char* what) {
    const uint8_t b = peek(what);
    ++pos_;
    return b;
  }
  // A data byte of a channel message: its top bit is clear (the error names its offset).
  uint8_t data_byte() {
    const uint8_t b = peek("a data byte");
    if (b & 0x80u) fail(fmt::format("data byte 0x{:02X} has its top bit set, expected 0x00-0x7F", b));
    ++pos_;
    return b;
  }
  uint32_t big_endian(int count, const char* what) {
    if (remaining() < static_cast<size_t>(count)) truncated(fmt::format("{} expected, the data ends", what));
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
    if (remaining() < count) truncated(fmt::format("{} declares {} bytes, {} remain", what, count, remaining()));
    std::vector<uint8_t> out(bytes_.begin() + static_cast<std::ptrdiff_t>(pos_),
                             bytes_.begin() + static_cast<std::ptrdiff_t>(pos_ + count));
    pos_ += count;
    return out;
  }
  std::string tag() {
    if (remaining() < 4) truncated("a chunk type expected, the data ends");
    pos_ += 4;
    return bytes_.substr(pos_ - 4, 4);
  }
  // A reader of the next `count` bytes, or of all that remain where the data ends first; this
  // reader moves past them.
  Reader part(uint32_t count, const std::string& where) {
    const size_t end = pos_ + std::min<size_t>(count, remaining());
    Reader inner(bytes_, pos_, end, name_, where);
    pos_ = end;
    return inner;
  }

 private:
  std::string message(const std::string& what) const {
    return fmt::format("{}: {}at byte {}: {}", name_, where_.empty() ? "" : where_ + " ", pos_, what);
  }

  const std::string& bytes_;
  size_t pos_, end_;
  const std::string& name_;
  std::string where_;
};

// Data bytes of a channel message by its kind (high nibble).
size_t data_bytes(uint8_t status) {
  const uint8_t kind = status & 0xF0;
  return kind == 0xC0 || kind == 0xD0 ? 1 : 2;
}

struct TrackState {
  int64_t tick = 0;
  uint8_t running = 0;  // the last channel status byte, for running status (0: none yet)
};

// A channel message with its status byte or, under running status, without: then the track's
// last one applies, and sysex and meta events in between leave it as it is, as players read files.
void read_channel_message(Reader& in, TrackState& track, MidiEvent& event) {
  const uint8_t first = in.peek("a status byte");
  if (first >= 0x80)
    track.running = in.byte("a status byte");
  else if (track.running == 0)
    in.fail(fmt::format("running status: data byte 0x{:02X} with no channel message before it in the track, "
                        "expected a status byte",
                        first));
  event.status = track.running;
  while (event.data.size() < data_bytes(event.status)) event.data.push_back(in.data_byte());
}

// Sysex (F0, F7) and meta (FF) events: a length, then the payload. The other system messages
// (F1-F6, F8-FE) belong to a live MIDI link, not to a file.
void read_sysex_or_meta(Reader& in, MidiEvent& event) {
  event.status = in.peek("a status byte");
  const bool meta = event.status == 0xFF;
  if (!meta && event.status != 0xF0 && event.status != 0xF7)
    in.fail(fmt::format("status byte 0x{:02X} is not allowed in a file (only channel messages, F0, F7 and FF)",
                        event.status));
  in.byte("a status byte");
  if (meta) event.meta_type = in.byte("a meta event type");
  const uint32_t length = in.vlq(meta ? "a meta event length" : "a sysex length");
  event.data = in.take(length, meta ? "a meta event" : "a sysex event");
}

MidiEvent read_event(Reader& in, TrackState& track) {
  track.tick += in.vlq("a delta time");
  if (track.tick > kMaxTick) in.fail(fmt::format("time runs past {} ticks", kMaxTick));
  MidiEvent event;
  event.tick = track.tick;
  if (in.peek("a status byte") >= 0xF0)
    read_sysex_or_meta(in, event);
  else
    read_channel_message(in, track, event);
  return event;
}

bool has_ended(const MidiTrack& track) {
  return !track.events.empty() && track.events.back().is_meta(kMetaEndOfTrack);
}

// Events up to the end of track, or to the end of the chunk where it has none. In a chunk cut by
// the end of the file (`cut`), an event the file ends inside is dropped; any other error stands.
MidiTrack read_track(Reader& in, bool cut) {
  MidiTrack track;
  TrackState state;
  while (!in.done() && !has_ended(track)) {
    try {
      track.events.push_back(read_event(in, state));
    } catch (const Truncated&) {
      if (!cut) throw;
      break;
    }
  }
  if (!has_ended(track))
    track.events.push_back({track.events.empty() ? 0 : track.events.back().tick, 0xFF, kMetaEndOfTrack, {}});
  return track;  // bytes after the end of track inside the chunk are ignored
}

// The MThd chunk into `out` (a longer header's extra bytes are skipped); returns the number of
// tracks it declares.
uint32_t read_header(Reader& file, MidiFile& out) {
  const uint32_t header_length = file.big_endian(4, "the header length");
  if (header_length < 6) file.fail(fmt::format("the header is {} bytes, expected at least 6", header_length));
  if (file.remaining() < header_length) file.truncated("the header ends early");
  out.format = static_cast<int>(file.big_endian(2, "the format"));
  const uint32_t tracks = file.big_endian(2, "the track count");
  const uint32_t division = file.big_endian(2, "the time division");
  file.take(header_length - 6, "the rest of the header");
  if (out.format > 2) file.fail(fmt::format("format {} is not 0, 1 or 2", out.format));
  if (out.format == 0 && tracks != 1) file.fail(fmt::format("a format 0 file declares {} tracks, expected 1", tracks));
  if (division & 0x8000u) file.fail("SMPTE time division is not supported (only ticks per quarter note)");
  if (division == 0) file.fail("the time division is 0 ticks per quarter note");
  out.ticks_per_quarter = static_cast<int>(division);
  return tracks;
}

// The next chunk: a track is added to `out`, other chunks are skipped, as the standard asks. A
// chunk whose length runs past the end of the file ends there.
void read_chunk(Reader& file, MidiFile& out) {
  const std::string type = file.tag();
  const uint32_t length = file.big_endian(4, "a chunk length");
  const bool cut = length > file.remaining();
  Reader chunk = file.part(length, fmt::format("track {}", out.tracks.size() + 1));
  if (type == "MTrk") out.tracks.push_back(read_track(chunk, cut));
}

}  // namespace

MidiFile read_midi(const std::string& bytes, const std::string& name) {
  Reader file(bytes, 0, bytes.size(), name, "");
  if (bytes.size() < 4 || bytes.compare(0, 4, "MThd") != 0) file.fail("not a Standard MIDI File (no MThd header)");
  file.tag();
  MidiFile out;
  const uint32_t declared = read_header(file, out);
  // Fewer tracks than declared: the file ends after the last one present (or inside a chunk header).
  while (out.tracks.size() < declared && file.remaining() >= kChunkHeaderBytes) read_chunk(file, out);
  if (declared > 0 && out.tracks.empty())
    file.truncated(fmt::format("{} track{} declared, the file ends before the first track chunk", declared,
                               declared == 1 ? "" : "s"));
  return out;  // bytes after the declared tracks are ignored
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
