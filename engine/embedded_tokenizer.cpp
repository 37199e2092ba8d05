// embedded_tokenizer.cpp: see embedded_tokenizer.h. The file is pulled in at build
// time with the assembler's .incbin (no generated sources, no configure-time cost).
#include "engine/embedded_tokenizer.h"

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
}  // namespace moebench
