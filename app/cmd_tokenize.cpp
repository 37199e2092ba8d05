// cmd_tokenize.cpp: `moebench tokenize` — encode text to ids (a JSON array on stdout)
// or, with --decode, ids to text, using an HF tokenizer.json.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "common/error.h"
#include "engine/tokenizer.h"

namespace cmd_tokenize {

namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string text;
  std::string ids;
  bool no_bos = false;
  bool decode = false;
  bool keep_special = false;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t[]"), e = item.find_last_not_of(" \t[]");
    if (b == std::string::npos) moebench::fail("--ids: empty entry in \"{}\", expected comma-separated ids", s);
    const std::string tok = item.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size() || v < 0 || v > INT32_MAX) moebench::fail("--ids: \"{}\" is not a token id", tok);
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

int run_tokenize(const TokenizeArgs& a) {
  const moebench::Tokenizer tok = moebench::Tokenizer::load(a.tokenizer);
  if (a.decode) {
    const std::vector<int32_t> ids = parse_ids(a.ids);
    for (int32_t id : ids)
      if (id >= tok.vocab_size()) moebench::fail("--ids: token id {} is not in {} ({} tokens)", id, a.tokenizer, tok.vocab_size());
    const std::string text = tok.decode(ids, !a.keep_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    std::printf("%s\n", nlohmann::json(tok.encode(a.text, !a.no_bos)).dump().c_str());
  }
  return 0;
}

}  // namespace

MOEBENCH_COMMAND(tokenize, "Encode text to token ids (JSON) or decode ids to text with a tokenizer.json",
                 [](CLI::App& sub) {
                   auto args = std::make_shared<TokenizeArgs>();
                   sub.add_option("--tokenizer", args->tokenizer, "HF tokenizer.json (SentencePiece BPE, or byte-level BPE in the Qwen or GPT-2 layout)")
                       ->required();
                   auto* text = sub.add_option("--text", args->text, "text to encode");
                   sub.add_flag("--no-bos", args->no_bos, "do not prepend the BOS token (byte-level files have none)");
                   auto* dec = sub.add_flag("--decode", args->decode, "decode --ids to text instead");
                   auto* ids = sub.add_option("--ids", args->ids, "comma-separated ids to decode, e.g. \"1,415,8814\"");
                   sub.add_flag("--keep-special", args->keep_special, "with --decode: print special tokens too");
                   dec->needs(ids);
                   ids->needs(dec);
                   text->excludes(dec);
                   sub.callback([text, dec] {
                     if (text->count() == 0 && dec->count() == 0)
                       throw CLI::RequiredError("--text (or --decode --ids)");
                   });
                   return [args] { return run_tokenize(*args); };
                 });

}  // namespace cmd_tokenize
