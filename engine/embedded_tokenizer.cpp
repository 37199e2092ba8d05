// embedded_tokenizer.cpp: see embedded_tokenizer.h. The file is pulled in at build
// time with the assembler's .incbin (no generated sources, no configure-time cost).
#include "engine/embedded_tokenizer.h"

#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "engine/tokenizer.h"
#include "engine/weight_source.h"

#define MB_STR2(x) #x
#define MB_STR(x) MB_STR2(x)

asm(".section .rodata\n"
    ".balign 16\n"
    ".global moebench_mistral_tokenizer_begin\n"
    "moebench_mistral_tokenizer_begin:\n"
    ".incbin \"" MOEBENCH_SOURCE_ROOT "/tests/fixtures/mistral/tokenizer.json\"\n"
    ".global moebench_mistral_tokenizer_end\n"
    "moebench_mistral_tokenizer_end:\n"
    ".previous\n");

extern "C" const char moebench_mistral_tokenizer_begin[];
extern "C" const char moebench_mistral_tokenizer_end[];

namespace moebench {
std::string_view embedded_mistral_tokenizer_json() {
  return {moebench_mistral_tokenizer_begin,
          static_cast<size_t>(moebench_mistral_tokenizer_end - moebench_mistral_tokenizer_begin)};
}

namespace {
// A tokenizer file for the model: more tokens than the model has rows is worth a warning (a
// text encoding to one of them is refused at prefill); fewer is common (padded embeddings)
// and decoding skips the ids past the tokenizer's.
Tokenizer load_for(const WeightSource& w, const std::string& file) {
  Tokenizer t = Tokenizer::load(file);
  if (t.vocab_size() > w.config().vocab_size)
    log::warn("{} has {} tokens but the model's vocab_size is {}: a text that encodes to an id past {} is refused", file,
              t.vocab_size(), w.config().vocab_size, w.config().vocab_size - 1);
  return t;
}
}  // namespace

Tokenizer tokenizer_for_model(const WeightSource& w, const std::string& path) {
  if (!path.empty()) return load_for(w, path);
  if (w.ckpt()) {
    auto p = std::filesystem::path(w.ckpt()->dir()) / "tokenizer.json";
    if (std::filesystem::exists(p)) return load_for(w, p.string());
  }
  Tokenizer t = Tokenizer::from_json_text(std::string(embedded_mistral_tokenizer_json()), "built-in Mistral tokenizer.json");
  if (t.vocab_size() != w.config().vocab_size)
    fail("model vocab_size is {} but no tokenizer.json was found and the built-in Mistral one has {} tokens: pass --tokenizer FILE",
         w.config().vocab_size, t.vocab_size());
  log::info("using the built-in Mistral tokenizer");
  return t;
}
}  // namespace moebench
