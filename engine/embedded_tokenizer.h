// embedded_tokenizer.h: the Mistral tokenizer.json built into the binary (from
// tests/fixtures/mistral, see its README), used when a synthetic model has the
// Mistral vocabulary and no --tokenizer is given.
#pragma once
#include <string_view>

namespace moebench {
std::string_view embedded_mistral_tokenizer_json();
}
