// unicode.h: the Unicode a byte-level BPE tokenizer needs (Qwen2/Qwen3 tokenizer.json):
// UTF-8 to code points and back, the letter / number / white-space classes its
// pre-tokenizer pattern uses, and NFC, its normalizer. The data (categories, combining
// classes, decompositions, compositions) are tables generated from one Unicode version
// (engine/unicode_tables.cpp, tools/make_unicode_tables.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moebench::unicode {

// Code points of valid UTF-8; invalid input (overlongs, surrogates, > U+10FFFF, cut
// sequences) is an Error naming `what` and the byte offset.
std::u32string decode_utf8(std::string_view s, const std::string& what);
// The same rule as decode_utf8, as a yes or no.
bool is_valid_utf8(std::string_view s);
// The bytes with each maximal ill-formed part of their UTF-8 replaced by U+FFFD (Rust's
// from_utf8_lossy, a TextDecoder's replacement; what HF's ByteLevel decoder gives).
std::string replace_ill_formed_utf8(std::string_view b);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(std::u32string_view cps);

bool is_letter(char32_t cp);   // general category L (Lu, Ll, Lt, Lm, Lo): regex \p{L}
bool is_number(char32_t cp);   // general category N (Nd, Nl, No): regex \p{N}
// Regex \s as Oniguruma (HF tokenizers' regex engine) reads it: the White_Space property,
// tab, LF, VT, FF, CR, space, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000 (not U+FEFF, which a JavaScript \s would add).
bool is_space(char32_t cp);

// Canonical composition (Unicode normalization form C).
std::u32string nfc(std::u32string_view s);

const char* version();  // of the tables

namespace tables {
struct Range { char32_t first, last; };
struct ClassRange { char32_t first, last; uint8_t ccc; };
struct Decomposition { char32_t cp, first, second; };  // second 0: a singleton
struct Composition { char32_t first, second, composed; };
extern const Range kLetters[];
extern const size_t kLetterCount;
extern const Range kNumbers[];
extern const size_t kNumberCount;
extern const ClassRange kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const Decomposition kDecompositions[];   // sorted by cp
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];       // sorted by (first, second)
extern const size_t kCompositionCount;
extern const char kUnicodeVersion[];
}  // namespace tables

}  // namespace moebench::unicode
