#pragma once
// Enumerations that users spell as words (configs, command lines): one table per enum gives
// both directions and the error that lists what is allowed.
#include <stdexcept>
#include <string>

namespace spe {

template <class Enum>
struct Choice {
  const char* name;
  Enum value;
};

template <class Enum, size_t N>
std::string choice_names(const Choice<Enum> (&table)[N]) {
  std::string names;
  for (const auto& choice : table) names += (names.empty() ? "" : ", ") + std::string(choice.name);
  return names;
}

// what: the setting being read, for the error ("model.positional.kind").
template <class Enum, size_t N>
Enum parse_choice(const std::string& what, const std::string& name, const Choice<Enum> (&table)[N]) {
  for (const auto& choice : table)
    if (name == choice.name) return choice.value;
  throw std::invalid_argument(what + ": '" + name + "' is not one of: " + choice_names(table));
}

template <class Enum, size_t N>
const char* choice_name(Enum value, const Choice<Enum> (&table)[N]) {
  for (const auto& choice : table)
    if (value == choice.value) return choice.name;
  throw std::logic_error("choice_name: value missing from its table");
}

}  // namespace spe
