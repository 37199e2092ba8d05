// embedded_tokenizer.h: the Mistral tokenizer.json built into the binary (from
// tests/fixtures/mistral, see its README), used when a synthetic model has the
// Mistral vocabulary and no --tokenizer is given.
#pragma once
#include <string>
#include <string_view>

namespace moebench {
class Tokenizer;
class WeightSource;

std::string_view embedded_mistral_tokenizer_json();

// The tokenizer a model is run with: the file at `path` when one is given, else the
// tokenizer.json beside the checkpoint, else the built-in Mistral one when the model's
// vocab_size is its 32,000 (an Error naming both sizes otherwise).
Tokenizer tokenizer_for_model(const WeightSource& w, const std::string& path);
}  // namespace moebench
