// unicode.cpp: see unicode.h. NFC is the standard algorithm (UAX #15): full canonical
// decomposition (the tables' mappings applied recursively, Hangul syllables computed),
// canonical ordering of each run of non-starters by combining class (stable), then
// canonical composition, where a character composes with the last starter unless a
// character between them has a combining class of 0 or one not below its own.
#include "engine/unicode.h"

#include <algorithm>

#include "common/error.h"

namespace moebench::unicode {

namespace {

// Hangul syllables: L V (T) jamo, computed (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

bool in_ranges(const tables::Range* r, size_t n, char32_t cp) {
  const tables::Range* end = r + n;
  auto it = std::upper_bound(r, end, cp, [](char32_t c, const tables::Range& x) { return c < x.first; });
  return it != r && cp <= (it - 1)->last;
}

uint8_t combining_class(char32_t cp) {
  using tables::kCombiningClasses;
  const auto* end = kCombiningClasses + tables::kCombiningClassCount;
  auto it = std::upper_bound(kCombiningClasses, end, cp,
                             [](char32_t c, const tables::ClassRange& x) { return c < x.first; });
  return it != kCombiningClasses && cp <= (it - 1)->last ? (it - 1)->ccc : 0;
}

const tables::Decomposition* decomposition(char32_t cp) {
  using tables::kDecompositions;
  const auto* end = kDecompositions + tables::kDecompositionCount;
  auto it = std::lower_bound(kDecompositions, end, cp, [](const tables::Decomposition& d, char32_t c) { return d.cp < c; });
  return it != end && it->cp == cp ? it : nullptr;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int s = static_cast<int>(cp - kSBase);
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const tables::Decomposition* d = decomposition(cp)) {
    decompose(d->first, out);
    if (d->second) decompose(d->second, out);
    return;
  }
  out.push_back(cp);
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  using tables::kCompositions;
  const auto* end = kCompositions + tables::kCompositionCount;
  auto it = std::lower_bound(kCompositions, end, std::pair{a, b}, [](const tables::Composition& c, std::pair<char32_t, char32_t> k) {
    return c.first != k.first ? c.first < k.first : c.second < k.second;
  });
  return it != end && it->first == a && it->second == b ? it->composed : 0;
}

// One code point of s at i, or what is wrong there: the rule decode_utf8 and is_valid_utf8
// share (no overlongs, surrogates or code points above U+10FFFF).
struct Utf8Step {
  enum Problem { none, bad_lead, cut_short, bad_continuation, not_scalar } problem = none;
  size_t len = 0;      // bytes of the code point (problem none)
  char32_t cp = 0;
  size_t at = 0;       // the offending byte (bad_continuation)
};

Utf8Step utf8_step(std::string_view s, size_t i) {
  Utf8Step r;
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    r.len = 1;
    r.cp = c;
    return r;
  }
  size_t n;
  char32_t cp;
  if ((c >> 5) == 0x6) { n = 2; cp = c & 0x1F; }
  else if ((c >> 4) == 0xE) { n = 3; cp = c & 0x0F; }
  else if ((c >> 3) == 0x1E) { n = 4; cp = c & 0x07; }
  else { r.problem = Utf8Step::bad_lead; return r; }
  if (i + n > s.size()) { r.problem = Utf8Step::cut_short; return r; }
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) {
      r.problem = Utf8Step::bad_continuation;
      r.at = i + k;
      return r;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    r.problem = Utf8Step::not_scalar;
    return r;
  }
  r.len = n;
  r.cp = cp;
  return r;
}

}  // namespace

std::u32string decode_utf8(std::string_view s, const std::string& what) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(s, i);
    switch (st.problem) {
      case Utf8Step::none: break;
      case Utf8Step::bad_lead: fail("{}: not valid UTF-8 at byte {} (0x{:02X})", what, i, static_cast<unsigned char>(s[i]));
      case Utf8Step::cut_short: fail("{}: not valid UTF-8 at byte {} (a sequence cut short by the end)", what, i);
      case Utf8Step::bad_continuation:
        fail("{}: not valid UTF-8 at byte {} (0x{:02X} inside a sequence)", what, st.at, static_cast<unsigned char>(s[st.at]));
      case Utf8Step::not_scalar:
        fail("{}: not valid UTF-8 at byte {} (an overlong form, a surrogate or beyond U+10FFFF)", what, i);
    }
    out.push_back(st.cp);
    i += st.len;
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(s, i);
    if (st.problem != Utf8Step::none) return false;
    i += st.len;
  }
  return true;
}

// Maximal subparts: a lead byte and as many following bytes as could still begin a
// well-formed sequence (the second byte's range depends on the lead, Unicode Table 3-7).
std::string replace_ill_formed_utf8(std::string_view b) {
  std::string out;
  out.reserve(b.size());
  const size_t n = b.size();
  auto at = [&](size_t k) { return static_cast<unsigned char>(b[k]); };
  for (size_t i = 0; i < n;) {
    const unsigned char c = at(i);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    size_t k = 1;
    if (len > 0) {
      for (; k < len && i + k < n; ++k) {
        const unsigned char d = at(i + k);
        if (k == 1 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) break;
      }
    }
    if (len > 0 && k == len) {
      out.append(b.substr(i, len));
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += k;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

bool is_letter(char32_t cp) { return in_ranges(tables::kLetters, tables::kLetterCount, cp); }
bool is_number(char32_t cp) { return in_ranges(tables::kNumbers, tables::kNumberCount, cp); }

bool is_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::u32string nfc(std::u32string_view s) {
  // Quick path: ASCII is its own NFC.
  if (std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x80; })) return std::u32string(s);
  std::u32string d;
  d.reserve(s.size() + 8);
  for (char32_t cp : s) decompose(cp, d);
  // Canonical ordering: each run of non-starters sorted by class, stable.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition.
  std::u32string out;
  out.reserve(d.size());
  size_t starter = std::u32string::npos;  // index in out of the last starter
  int last_class = -1;                    // class of the last character appended after it (-1: none)
  for (char32_t cp : d) {
    const int cc = combining_class(cp);
    // Not blocked: nothing between the starter and cp, or what is between (a non-starter:
    // a starter that does not compose becomes the next starter) has a lower class.
    if (starter != std::u32string::npos && (last_class == -1 || last_class < cc)) {
      if (char32_t c = compose(out[starter], cp)) {
        out[starter] = c;
        continue;
      }
    }
    if (cc == 0) {
      starter = out.size();
      last_class = -1;
    } else {
      last_class = cc;
    }
    out.push_back(cp);
  }
  return out;
}

const char* version() { return tables::kUnicodeVersion; }

}  // namespace moebench::unicode
