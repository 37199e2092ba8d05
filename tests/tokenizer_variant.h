// tokenizer_variant.h: a fixture's tokenizer.json changed as one of its variants says (the
// variants files of tests/fixtures/gpt2 and tests/fixtures/mistral): each "set" entry is
// [JSON pointer, value], then "append_added" is appended to added_tokens.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "engine/tokenizer.h"

namespace moebench::test {

inline Tokenizer tokenizer_variant(nlohmann::json j, const nlohmann::json& variant) {
  for (const nlohmann::json& set : variant.at("set"))
    j[nlohmann::json::json_pointer(set.at(0).get<std::string>())] = set.at(1);
  for (const nlohmann::json& a : variant.at("append_added")) j["added_tokens"].push_back(a);
  return Tokenizer::from_json_text(j.dump(), variant.at("name").get<std::string>());
}

}  // namespace moebench::test
