// tokenizer.cpp: loading an HF tokenizer.json (BPE model) and its encode/decode, in two
// kinds: SentencePiece BPE (Llama / Mistral files: "▁" for spaces, <0xNN> byte fallback,
// merges over each section) and byte-level BPE (Qwen2 / Qwen3 and GPT-2-layout files: NFC
// where asked, the Qwen or GPT-2 pre-tokenizer pattern, each piece's UTF-8 bytes as GPT-2's
// byte characters, merges within a piece). Both split added tokens out first, raw then
// normalized (tokenizer.h). The merge loop is SentencePiece's (HF's BPE is the same): a
// doubly linked list of symbols and a min-heap of candidate pairs keyed by (rank, left
// position); stale heap entries are skipped when popped. O(n log n) in the number of
// characters.
#include "engine/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "engine/unicode.h"

namespace moebench {
namespace {

using nlohmann::json;

constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581 "▁"

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return s;
}

// Parses "<0xNN>" (either hex case, as HF's ByteFallback decoder does); -1 otherwise.
int byte_token_value(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(p[3]), lo = hex(p[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

// Length of the UTF-8 sequence starting at s[i]; an invalid sequence counts as one byte.
size_t utf8_char_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

// The length of the White_Space character that starts at s[i] (0: none there, or bytes that
// are not UTF-8, which SentencePiece text may hold).
size_t space_len_at(std::string_view s, size_t i) {
  const size_t len = utf8_char_len(s, i);
  const std::string_view ch = s.substr(i, len);
  if (len == 1 ? static_cast<unsigned char>(s[i]) >= 0x80 : !unicode::is_valid_utf8(ch)) return 0;
  return unicode::is_space(unicode::decode_utf8(ch, "text")[0]) ? len : 0;
}

// The length of the White_Space character that ends at s[k - 1] (0: none there); k >= 1.
size_t space_len_before(std::string_view s, size_t k) {
  size_t start = k - 1;
  while (start > 0 && k - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  const size_t len = k - start;
  return utf8_char_len(s, start) == len && space_len_at(s, start) == len ? len : 0;
}

// GPT-2's bytes as characters: the printable Latin-1 bytes (! to ~, ¡ to ¬, ® to ÿ) stand
// for themselves, the other 68 (controls, space, DEL to NBSP, soft hyphen) for U+0100 on,
// in byte order.
const std::array<char32_t, 256>& byte_chars() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

// The byte a byte character stands for, or -1.
int char_byte(char32_t c) {
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_chars()[static_cast<size_t>(b)]] = static_cast<int16_t>(b);
    return t;
  }();
  return c < inverse.size() ? inverse[c] : -1;
}

// The Qwen2 / Qwen3 pre-tokenizer (a Split, behavior Isolated, on this pattern; HF runs it
// with Oniguruma, the reference implementation as a JavaScript RegExp rewritten to the
// same classes):
constexpr std::string_view kQwenPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The end of the pattern's match at i (leftmost-first alternation, greedy quantifiers with
// backtracking, worked out per alternative). Every code point starts some alternative, so
// the pieces cover the text.
size_t qwen_match_end(const std::u32string& s, size_t i) {
  using unicode::is_letter, unicode::is_number, unicode::is_space;
  const size_t n = s.size();
  auto newline = [](char32_t c) { return c == U'\r' || c == U'\n'; };
  auto lower = [](char32_t c) { return c >= U'A' && c <= U'Z' ? c + 32 : c; };  // ASCII only, as (?i:) runs there
  auto other = [&](char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); };  // [^\s\p{L}\p{N}]
  auto letters_from = [&](size_t j) {
    while (j < n && is_letter(s[j])) ++j;
    return j;
  };
  auto space_run_end = [&](size_t j) {
    while (j < n && is_space(s[j])) ++j;
    return j;
  };
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (s[i] == U'\'' && i + 1 < n) {
    const char32_t a = lower(s[i + 1]);
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = lower(s[i + 2]);
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return i + 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (!newline(s[i]) && !is_letter(s[i]) && !is_number(s[i]) && i + 1 < n && is_letter(s[i + 1])) return letters_from(i + 1);
  if (is_letter(s[i])) return letters_from(i);
  // \p{N}
  if (is_number(s[i])) return i + 1;
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    size_t j = i;
    if (s[j] == U' ' && j + 1 < n && other(s[j + 1])) ++j;
    if (other(s[j])) {
      while (j < n && other(s[j])) ++j;
      while (j < n && newline(s[j])) ++j;
      return j;
    }
  }
  // s[i] is white space from here on.
  const size_t run = space_run_end(i);
  // \s*[\r\n]+: through the run's last line break.
  for (size_t p = run; p > i; --p)
    if (newline(s[p - 1])) return p;
  // \s+(?!\S): the run, less its last character when a non-space follows.
  if (run == n) return run;
  if (run - 1 > i) return run - 1;
  // \s+
  return run;
}

// GPT-2's pre-tokenizer pattern (a ByteLevel pre-tokenizer with use_regex; GPT-NeoX-style
// files use it too). HF runs it with Oniguruma, where \s is White_Space.
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The end of its match at i, worked out per alternative as for the Qwen pattern.
size_t gpt2_match_end(const std::u32string& s, size_t i) {
  using unicode::is_letter, unicode::is_number, unicode::is_space;
  const size_t n = s.size();
  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, unlike Qwen's)
  if (s[i] == U'\'' && i + 1 < n) {
    const char32_t a = s[i + 1];
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = s[i + 2];
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return i + 3;
    }
  }
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': a run of one class, after one optional space.
  const size_t start = s[i] == U' ' && i + 1 < n && !is_space(s[i + 1]) ? i + 1 : i;
  for (bool (*cls)(char32_t) : {+[](char32_t c) { return is_letter(c); }, +[](char32_t c) { return is_number(c); },
                                +[](char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }}) {
    if (!cls(s[start])) continue;
    size_t j = start;
    while (j < n && cls(s[j])) ++j;
    return j;
  }
  // s[i] is white space from here on: \s+(?!\S), the run less its last character when a
  // non-space follows, else \s+.
  size_t run = i;
  while (run < n && is_space(s[run])) ++run;
  if (run == n) return run;
  if (run - 1 > i) return run - 1;
  return run;
}

// Reads the parts of tokenizer.json and reports problems as "<file>: <field>: <what>".
struct Reader {
  const std::string& src;

  [[noreturn]] void bad(const std::string& field, const std::string& what) const {
    fail("{}: {}: {}", src, field, one_line(what));
  }
  const json& need(const json& obj, const char* key, const std::string& field) const {
    auto it = obj.find(key);
    if (it == obj.end()) bad(field, "missing");
    return *it;
  }
  const json& need_object(const json& obj, const char* key, const std::string& field) const {
    const json& v = need(obj, key, field);
    if (!v.is_object()) bad(field, fmt::format("expected an object, found {}", v.type_name()));
    return v;
  }
  const json& need_array(const json& obj, const char* key, const std::string& field) const {
    const json& v = need(obj, key, field);
    if (!v.is_array()) bad(field, fmt::format("expected an array, found {}", v.type_name()));
    return v;
  }
  std::string need_string(const json& obj, const char* key, const std::string& field) const {
    const json& v = need(obj, key, field);
    if (!v.is_string()) bad(field, fmt::format("expected a string, found {}", v.type_name()));
    return v.get<std::string>();
  }
  bool opt_bool(const json& obj, const char* key, bool dflt, const std::string& field) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) bad(field, fmt::format("expected true or false, found {}", it->type_name()));
    return it->get<bool>();
  }
  int32_t token_id(const json& v, const std::string& field) const {
    if (v.is_number_unsigned() && v.get<uint64_t>() < static_cast<uint64_t>(INT32_MAX))
      return static_cast<int32_t>(v.get<uint64_t>());
    if (v.is_number_integer() && !v.is_number_unsigned())
      bad(field, fmt::format("expected a token id >= 0, found {}", v.dump()));
    bad(field, fmt::format("expected a token id (integer in [0, 2^31-1)), found {}", v.dump()));
  }
};

json parse_json_text(const std::string& text, const std::string& src) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON (byte {}): {}", src, e.byte, one_line(e.what()));
  } catch (const json::exception& e) {  // a number out of range (1e999) is not a parse_error
    fail("{}: not valid JSON: {}", src, one_line(e.what()));
  }
}

thread_local uint64_t t_pair_lookups = 0;

}  // namespace

uint64_t Tokenizer::pair_lookups_on_this_thread() { return t_pair_lookups; }

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open tokenizer file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return from_json_text(ss.str(), path);
}

// The steps of Tokenizer::from_json_text, in the order the file is checked: each reads
// one part of tokenizer.json into the tokenizer and reports problems through Reader.
struct TokenizerLoader {
  using IdToPiece = std::unordered_map<int32_t, std::string>;
  struct Added {
    int32_t id;
    bool special;
    std::string content, field;
    bool normalized, lstrip, rstrip, single_word;
  };
  using AddedTokens = std::vector<Added>;
  const Reader& r;
  Tokenizer& t;

  // ---- model: BPE with SentencePiece semantics, and its flags ----
  void model_options(const json& model) {
    const std::string type = r.need_string(model, "type", "model.type");
    if (type != "BPE") r.bad("model.type", fmt::format("expected \"BPE\", found \"{}\" (only BPE models are supported)", type));
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(k);
      if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
        r.bad(fmt::format("model.{}", k), fmt::format("expected null (SentencePiece BPE has none), found {}", it->dump()));
    }
    if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
      if (!it->is_number()) r.bad("model.dropout", fmt::format("expected null or a number, found {}", it->type_name()));
      if (it->get<double>() > 0.0) r.bad("model.dropout", fmt::format("expected null or 0 (dropout is random), found {}", it->dump()));
    }
    t.byte_fallback_ = r.opt_bool(model, "byte_fallback", false, "model.byte_fallback");
    t.fuse_unk_ = r.opt_bool(model, "fuse_unk", false, "model.fuse_unk");
    t.ignore_merges_ = r.opt_bool(model, "ignore_merges", false, "model.ignore_merges");
  }

  // ---- vocabulary and added tokens: one dense id space ----
  IdToPiece vocabulary(const json& model) {
    const json& vocab = r.need_object(model, "vocab", "model.vocab");
    IdToPiece by_id;
    by_id.reserve(vocab.size() + 16);
    t.piece_to_id_.reserve(vocab.size() + 16);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id = r.token_id(it.value(), fmt::format("model.vocab[\"{}\"]", it.key()));
      auto [pos, fresh] = by_id.emplace(id, it.key());
      if (!fresh) r.bad("model.vocab", fmt::format("duplicate id {} for \"{}\" and \"{}\"", id, pos->second, it.key()));
      t.piece_to_id_.emplace(it.key(), id);
    }
    if (by_id.empty()) r.bad("model.vocab", "expected a non-empty object of token -> id");
    return by_id;
  }

  AddedTokens added_tokens(const json& root, IdToPiece& by_id) {
    AddedTokens added;
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return added;
    if (!it->is_array()) r.bad("added_tokens", fmt::format("expected an array, found {}", it->type_name()));
    for (size_t i = 0; i < it->size(); ++i) {
      const json& a = (*it)[i];
      const std::string field = fmt::format("added_tokens[{}]", i);
      if (!a.is_object()) r.bad(field, fmt::format("expected an object, found {}", a.type_name()));
      const int32_t id = r.token_id(r.need(a, "id", field + ".id"), field + ".id");
      const std::string content = r.need_string(a, "content", field + ".content");
      const bool special = r.opt_bool(a, "special", false, field + ".special");
      // HF's default: special tokens are matched in the raw text, others after normalizing.
      const bool normalized = r.opt_bool(a, "normalized", !special, field + ".normalized");
      const bool lstrip = r.opt_bool(a, "lstrip", false, field + ".lstrip");
      const bool rstrip = r.opt_bool(a, "rstrip", false, field + ".rstrip");
      const bool single_word = r.opt_bool(a, "single_word", false, field + ".single_word");
      auto [pos, fresh] = by_id.emplace(id, content);
      if (!fresh && pos->second != content)
        r.bad(field, fmt::format("id {} is \"{}\" here but \"{}\" in model.vocab", id, content, pos->second));
      auto [ppos, pfresh] = t.piece_to_id_.emplace(content, id);
      if (!pfresh && ppos->second != id)
        r.bad(field, fmt::format("\"{}\" has id {} here but {} elsewhere", content, id, ppos->second));
      added.push_back({id, special, content, field, normalized, lstrip, rstrip, single_word});
    }
    return added;
  }

  // Dense ids: n entries must be exactly the ids 0..n-1 (checked before allocating).
  void id_tables(IdToPiece& by_id, const AddedTokens& added) {
    const size_t n = by_id.size();
    for (const auto& [id, piece] : by_id)
      if (static_cast<size_t>(id) >= n)
        r.bad("model.vocab", fmt::format("token ids must be 0..{} without gaps, found id {} (\"{}\")", n - 1, id, piece));
    t.pieces_.resize(n);
    for (auto& [id, piece] : by_id) t.pieces_[id] = std::move(piece);
    t.special_.assign(n, 0);
    for (const Added& a : added) t.special_[a.id] = a.special ? 1 : 0;
    t.byte_value_.assign(n, -1);
    int n_byte_tokens = 0;
    for (size_t id = 0; id < n; ++id) {
      const int b = byte_token_value(t.pieces_[id]);
      t.byte_value_[id] = static_cast<int16_t>(b);
      if (b >= 0 && t.pieces_[id] == fmt::format("<0x{:02X}>", b)) {
        t.byte_ids_[b] = static_cast<int32_t>(id);
        ++n_byte_tokens;
      }
    }
    t.has_byte_tokens_ = n_byte_tokens == 256;
    if (t.byte_fallback_ && !t.has_byte_tokens_)
      r.bad("model.byte_fallback", fmt::format("true, but model.vocab has {} of the 256 <0xNN> byte tokens", n_byte_tokens));
  }

  // ---- merges: "a b" strings or ["a", "b"] pairs, in rank order ----
  std::pair<std::string, std::string> merge_pair(const json& m, const std::string& field) const {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        r.bad(field, fmt::format("expected \"left right\" (two tokens, one space), found \"{}\"", s));
      return {s.substr(0, sp), s.substr(sp + 1)};
    }
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
      return {m[0].get<std::string>(), m[1].get<std::string>()};
    r.bad(field, fmt::format("expected \"left right\" or [\"left\", \"right\"], found {}", m.dump()));
  }

  void merges(const json& model, const std::string& src) {
    const json& merges = r.need_array(model, "merges", "model.merges");
    t.merges_.reserve(merges.size());
    size_t n_dup = 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string field = fmt::format("model.merges[{}]", i);
      const auto [a, b] = merge_pair(merges[i], field);
      const int32_t ia = t.token_id(a), ib = t.token_id(b), ir = t.token_id(a + b);
      if (ia < 0) r.bad(field, fmt::format("token \"{}\" is not in model.vocab", a));
      if (ib < 0) r.bad(field, fmt::format("token \"{}\" is not in model.vocab", b));
      if (ir < 0) r.bad(field, fmt::format("merged token \"{}{}\" is not in model.vocab", a, b));
      // A repeated pair takes its later rank, as HF tokenizers does.
      auto [pos, fresh] = t.merges_.insert_or_assign(Tokenizer::pair_key(ia, ib), Tokenizer::Merge{static_cast<int32_t>(i), ir});
      (void)pos;
      if (!fresh) ++n_dup;
    }
    if (n_dup > 0) log::warn("{}: model.merges lists {} pair(s) twice; the later rank is used", src, n_dup);
  }

  // ---- normalizer / pre_tokenizer: how spaces and the leading "▁" are produced ----
  void one_normalizer(const json& nz, const std::string& field) {
    if (!nz.is_object()) r.bad(field, fmt::format("expected an object, found {}", nz.type_name()));
    const std::string nt = r.need_string(nz, "type", field + ".type");
    if (nt == "Prepend") {
      if (r.need_string(nz, "prepend", field + ".prepend") != kMeta)
        r.bad(field + ".prepend", "expected \"\u2581\"");
      t.norm_prepend_ = true;
    } else if (nt == "Replace") {
      const json& pat = r.need_object(nz, "pattern", field + ".pattern");
      auto ps = pat.find("String");
      if (ps == pat.end() || !ps->is_string() || ps->get<std::string>() != " " ||
          r.need_string(nz, "content", field + ".content") != kMeta)
        r.bad(field, "expected Replace of \" \" by \"\u2581\"");
      t.norm_replace_ = true;
    } else if (nt == "NFC") {
      t.nfc_ = true;
    } else {
      r.bad(field + ".type", fmt::format("expected Prepend or Replace (Llama/Mistral normalizers) or NFC (Qwen), found \"{}\"", nt));
    }
  }

  void normalizer(const json& root) {
    t.norm_prepend_ = t.norm_replace_ = t.nfc_ = false;
    auto it = root.find("normalizer");
    if (it == root.end() || it->is_null()) return;
    if (it->is_object() && it->value("type", "") == "Sequence") {
      const json& list = r.need_array(*it, "normalizers", "normalizer.normalizers");
      for (size_t i = 0; i < list.size(); ++i) one_normalizer(list[i], fmt::format("normalizer.normalizers[{}]", i));
    } else {
      one_normalizer(*it, "normalizer");
    }
  }

  // Newer Mistral files: normalizer null, Metaspace(replacement "▁", prepend_scheme first,
  // split false). GPT-2-layout files: ByteLevel with its own regex.
  void pre_tokenizer(const json& root) {
    auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_object()) r.bad("pre_tokenizer", fmt::format("expected null or an object, found {}", it->type_name()));
    const std::string pt = r.need_string(*it, "type", "pre_tokenizer.type");
    if (pt == "Sequence") return byte_level_pre_tokenizer(*it);
    if (pt == "ByteLevel") return gpt2_pre_tokenizer(*it);
    if (pt != "Metaspace")
      r.bad("pre_tokenizer.type",
            fmt::format("expected null, \"Metaspace\" (Llama/Mistral), \"ByteLevel\" (GPT-2's layout) or the Sequence of "
                        "Split and ByteLevel that Qwen2 and Qwen3 files have, found \"{}\"", pt));
    if (r.need_string(*it, "replacement", "pre_tokenizer.replacement") != kMeta)
      r.bad("pre_tokenizer.replacement", "expected \"\u2581\"");
    if (r.opt_bool(*it, "split", true, "pre_tokenizer.split"))
      r.bad("pre_tokenizer.split", "expected false (splitting into words is not SentencePiece semantics)");
    Tokenizer::Prepend prepend = r.opt_bool(*it, "add_prefix_space", true, "pre_tokenizer.add_prefix_space")
                                     ? Tokenizer::Prepend::always : Tokenizer::Prepend::never;
    if (auto ps = it->find("prepend_scheme"); ps != it->end() && !ps->is_null()) {
      const std::string s = ps->is_string() ? ps->get<std::string>() : ps->dump();
      if (s == "first") prepend = Tokenizer::Prepend::first;
      else if (s == "always") prepend = Tokenizer::Prepend::always;
      else if (s == "never") prepend = Tokenizer::Prepend::never;
      else r.bad("pre_tokenizer.prepend_scheme", fmt::format("expected \"first\", \"always\" or \"never\", found {}", s));
    }
    t.metaspace_ = true;
    t.metaspace_prepend_ = prepend;
  }

  // GPT-2's layout: ByteLevel with its own regex, a space before each part when
  // add_prefix_space is set.
  void gpt2_pre_tokenizer(const json& bl) {
    if (!r.opt_bool(bl, "use_regex", true, "pre_tokenizer.use_regex"))
      r.bad("pre_tokenizer.use_regex", "expected true (a ByteLevel pre-tokenizer alone splits by GPT-2's pattern)");
    t.prefix_space_ = r.opt_bool(bl, "add_prefix_space", true, "pre_tokenizer.add_prefix_space");
    t.pattern_ = Tokenizer::Pattern::gpt2;
    t.byte_level_ = true;
  }

  // Qwen2 / Qwen3: Sequence [Split(the Qwen pattern, Isolated), ByteLevel(no prefix space,
  // no regex of its own)]. Other Sequences (other Split patterns) are refused by name.
  void byte_level_pre_tokenizer(const json& seq) {
    const std::string f = "pre_tokenizer.pretokenizers";
    const json& list = r.need_array(seq, "pretokenizers", f);
    auto expect = [&](bool ok, const std::string& field, const std::string& what) {
      if (!ok) r.bad(field, "expected " + what + " (the Qwen2/Qwen3 byte-level pre-tokenizer; no other Sequence is supported)");
    };
    expect(list.size() == 2, f, "two pre-tokenizers, Split then ByteLevel");
    const json& split = list[0];
    const json& bl = list[1];
    expect(split.is_object() && split.value("type", "") == "Split", f + "[0].type", "\"Split\"");
    const json& pat = r.need_object(split, "pattern", f + "[0].pattern");
    auto rx = pat.find("Regex");
    expect(rx != pat.end() && rx->is_string() && rx->get<std::string>() == kQwenPattern, f + "[0].pattern.Regex",
           "the Qwen pattern");
    expect(split.value("behavior", "") == "Isolated", f + "[0].behavior", "\"Isolated\"");
    expect(!r.opt_bool(split, "invert", false, f + "[0].invert"), f + "[0].invert", "false");
    expect(bl.is_object() && bl.value("type", "") == "ByteLevel", f + "[1].type", "\"ByteLevel\"");
    expect(!r.opt_bool(bl, "add_prefix_space", true, f + "[1].add_prefix_space"), f + "[1].add_prefix_space", "false");
    expect(!r.opt_bool(bl, "use_regex", true, f + "[1].use_regex"), f + "[1].use_regex", "false");
    t.pattern_ = Tokenizer::Pattern::qwen;
    t.byte_level_ = true;
  }

  // Byte-level files: every byte's character in the vocabulary, a ByteLevel decoder and no
  // post-processor that adds tokens.
  void byte_level_parts(const json& root) {
    if (t.byte_fallback_) r.bad("model.byte_fallback", "expected false in a byte-level file (every byte is a character)");
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      unicode::append_utf8(ch, byte_chars()[static_cast<size_t>(b)]);
      const int32_t id = t.token_id(ch);
      if (id < 0) r.bad("model.vocab", fmt::format("has no token \"{}\" for byte 0x{:02X} (a byte-level vocabulary has all 256)", ch, b));
      t.byte_symbol_ids_[b] = id;
    }
    for (const char* part : {"decoder", "post_processor"}) {
      auto it = root.find(part);
      if (it == root.end() || it->is_null()) continue;
      if (!it->is_object() || it->value("type", "") != "ByteLevel")
        r.bad(part, fmt::format("expected null or ByteLevel in a byte-level file, found {}", it->dump().substr(0, 80)));
    }
  }

  // Added tokens: those with normalized false are matched in the raw text, the others in
  // each normalized section, their content normalized the same way (as HF does).
  void added_sets(const AddedTokens& added) {
    for (const Added& a : added) {
      if (a.single_word) r.bad(a.field + ".single_word", "expected false (matching whole words only is not implemented)");
      if (a.content.empty()) r.bad(a.field + ".content", "expected a non-empty string");
      if (!a.normalized) {
        t.raw_added_.add(a.content, a.id, a.lstrip, a.rstrip);
        continue;
      }
      std::string content = a.content;
      if (t.byte_level_) {
        if (!unicode::is_valid_utf8(content)) r.bad(a.field + ".content", "not valid UTF-8");
        if (t.nfc_) content = unicode::encode_utf8(unicode::nfc(unicode::decode_utf8(content, a.field)));
      } else {
        content = t.normalize_sentencepiece(content);
      }
      t.normalized_added_.add(std::move(content), a.id, a.lstrip, a.rstrip);
    }
    t.raw_added_.sort();
    t.normalized_added_.sort();
    t.round_trips_ = !t.prefix_space_ && std::none_of(added.begin(), added.end(), [](const Added& a) { return a.lstrip || a.rstrip; });
  }

  // ---- special tokens ----
  void special_tokens(const json& model) {
    if (t.byte_level_) {  // no BOS (nothing adds one), no unknown token (every byte is one)
      if (auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null())
        r.bad("model.unk_token", "expected null in a byte-level file");
      t.eos_id_ = t.token_id("<|endoftext|>");
      return;
    }
    auto unk = model.find("unk_token");
    if (unk != model.end() && !unk->is_null()) {
      if (!unk->is_string()) r.bad("model.unk_token", fmt::format("expected a string, found {}", unk->type_name()));
      t.unk_id_ = t.token_id(unk->get<std::string>());
      if (t.unk_id_ < 0) r.bad("model.unk_token", fmt::format("\"{}\" is not a token", unk->get<std::string>()));
    } else {
      t.unk_id_ = t.token_id("<unk>");
    }
    t.bos_id_ = t.token_id("<s>");
    t.eos_id_ = t.token_id("</s>");
    if (t.bos_id_ < 0) r.bad("added_tokens", "no BOS token \"<s>\" in added_tokens or model.vocab");
    if (t.eos_id_ < 0) r.bad("added_tokens", "no EOS token \"</s>\" in added_tokens or model.vocab");
  }
};

Tokenizer Tokenizer::from_json_text(const std::string& text, const std::string& src) {
  const json root = parse_json_text(text, src);
  Reader r{src};
  if (!root.is_object()) r.bad("(top level)", fmt::format("expected an object, found {}", root.type_name()));

  Tokenizer t;
  TokenizerLoader load{r, t};
  try {
    const json& model = r.need_object(root, "model", "model");
    load.model_options(model);
    TokenizerLoader::IdToPiece by_id = load.vocabulary(model);
    const TokenizerLoader::AddedTokens added = load.added_tokens(root, by_id);
    load.id_tables(by_id, added);
    load.merges(model, src);
    load.normalizer(root);
    load.pre_tokenizer(root);
    if (t.byte_level_) load.byte_level_parts(root);
    load.added_sets(added);
    load.special_tokens(model);
  } catch (const json::exception& e) {  // a shape the checks above missed
    fail("{}: unexpected layout: {}", src, one_line(e.what()));
  }
  log::debug("{}: {} tokens, {} merges, {}", src, t.pieces_.size(), t.merges_.size(),
             t.byte_level_ ? "byte-level" : fmt::format("byte_fallback {}", t.byte_fallback_));
  return t;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id {} out of range [0, {})", id, vocab_size());
  return pieces_[id];
}

int32_t Tokenizer::token_id(std::string_view piece) const {
  auto it = piece_to_id_.find(std::string(piece));
  return it == piece_to_id_.end() ? -1 : it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[id] != 0;
}

void Tokenizer::initial_symbols(std::string_view s, std::vector<int32_t>& ids) const {
  bool prev_unk = false;
  std::string ch;
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_char_len(s, i);
    ch.assign(s.substr(i, len));
    i += len;
    if (auto it = piece_to_id_.find(ch); it != piece_to_id_.end()) {
      ids.push_back(it->second);
      prev_unk = false;
    } else if (byte_fallback_) {
      for (char c : ch) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
      prev_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && prev_unk)) ids.push_back(unk_id_);
      prev_unk = true;
    }
    // else: no unk token, the character is dropped (as HF tokenizers does).
  }
}

void Tokenizer::apply_merges(std::vector<int32_t>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2) return;
  std::vector<int> prev(n), next(n);  // (n,) linked list over symbols; next = -1 at the end
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Cand {
    int32_t rank;
    int left, right;
    int32_t left_id, right_id, result;
  };
  // Lowest rank first; among equal ranks the leftmost pair (SentencePiece and HF agree).
  auto later = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.left > b.left; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(later)> heap(later);
  auto consider = [&](int l) {
    if (l < 0 || next[l] < 0) return;
    const int rr = next[l];
    ++t_pair_lookups;
    auto it = merges_.find(pair_key(ids[l], ids[rr]));
    if (it != merges_.end()) heap.push({it->second.rank, l, rr, ids[l], ids[rr], it->second.result});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    // Stale if either side has since merged (ids change) or the pair is no longer adjacent.
    if (ids[c.left] != c.left_id || next[c.left] != c.right || ids[c.right] != c.right_id) continue;
    ids[c.left] = c.result;
    ids[c.right] = -1;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    consider(prev[c.left]);
    consider(c.left);
  }
  int out = 0;
  for (int i = 0; i >= 0; i = next[i]) ids[out++] = ids[i];
  ids.resize(out);
}

void Tokenizer::AddedSet::add(std::string content, int32_t id, bool lstrip, bool rstrip) {
  first_byte[static_cast<unsigned char>(content[0])] = true;
  tokens.push_back({std::move(content), id, lstrip, rstrip});
}

void Tokenizer::AddedSet::sort() {
  // Longest first, so the first that matches at a position is the longest there.
  std::stable_sort(tokens.begin(), tokens.end(), [](const AddedText& x, const AddedText& y) { return x.content.size() > y.content.size(); });
}

template <class F>
void Tokenizer::split_added(std::string_view text, const AddedSet& set, std::vector<int32_t>& out, F&& section) {
  size_t seg = 0;  // start of the text not yet passed on
  for (size_t i = 0; i < text.size() && !set.empty();) {
    const AddedText* hit = nullptr;
    if (set.first_byte[static_cast<unsigned char>(text[i])])
      for (const AddedText& a : set.tokens)
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;
          break;
        }
    if (!hit) {
      ++i;
      continue;
    }
    size_t before = i;  // the section before ends here
    if (hit->lstrip)
      while (before > seg) {
        const size_t len = space_len_before(text, before);
        if (len == 0) break;
        before -= len;
      }
    if (before > seg) section(text.substr(seg, before - seg), seg);
    out.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size()) {
        const size_t len = space_len_at(text, i);
        if (len == 0) break;
        i += len;
      }
    seg = i;
  }
  if (seg < text.size()) section(text.substr(seg), seg);
}

std::string Tokenizer::normalize_sentencepiece(std::string_view section) const {
  std::string s;
  s.reserve(section.size() + 16);
  if (norm_prepend_ && !section.empty()) s.append(kMeta);
  for (char c : section) {
    if (c == ' ' && norm_replace_) s.append(kMeta);
    else s.push_back(c);
  }
  return s;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  split_added(text, raw_added_, out, [&](std::string_view section, size_t offset) { encode_section(section, offset, out); });
  return out;
}

void Tokenizer::encode_section(std::string_view section, size_t offset, std::vector<int32_t>& out) const {
  std::string normalized;
  if (byte_level_) {
    std::u32string cps = unicode::decode_utf8(section, "text to encode");
    normalized = unicode::encode_utf8(nfc_ ? unicode::nfc(cps) : cps);
  } else {
    normalized = normalize_sentencepiece(section);
  }
  split_added(normalized, normalized_added_, out, [&](std::string_view part, size_t part_offset) {
    encode_part(part, offset == 0 && part_offset == 0, out);
  });
}

void Tokenizer::encode_part(std::string_view part, bool at_text_start, std::vector<int32_t>& out) const {
  if (byte_level_) {
    std::u32string cps = unicode::decode_utf8(part, "text to encode");
    if (prefix_space_ && cps[0] != U' ') cps.insert(cps.begin(), U' ');
    std::string piece;
    for (size_t i = 0; i < cps.size();) {
      const size_t end = pattern_ == Pattern::qwen ? qwen_match_end(cps, i) : gpt2_match_end(cps, i);
      piece.clear();
      for (size_t k = i; k < end; ++k) unicode::append_utf8(piece, cps[k]);
      encode_byte_level_piece(piece, out);
      i = end;
    }
    return;
  }
  std::string s(part);
  if (metaspace_) {
    s.clear();
    for (char c : part) {
      if (c == ' ') s.append(kMeta);
      else s.push_back(c);
    }
    const bool prepend = metaspace_prepend_ == Prepend::always || (metaspace_prepend_ == Prepend::first && at_text_start);
    if (prepend && !s.starts_with(kMeta)) s.insert(0, kMeta);
  }
  if (ignore_merges_) {
    if (auto it = piece_to_id_.find(s); it != piece_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(s.size());
  initial_symbols(s, ids);
  apply_merges(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

void Tokenizer::encode_byte_level_piece(std::string_view bytes, std::vector<int32_t>& out) const {
  if (ignore_merges_) {  // a piece that is a token as a whole is that token
    std::string chars;
    for (char c : bytes) unicode::append_utf8(chars, byte_chars()[static_cast<unsigned char>(c)]);
    if (auto it = piece_to_id_.find(chars); it != piece_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(bytes.size());
  for (char c : bytes) ids.push_back(byte_symbol_ids_[static_cast<unsigned char>(c)]);
  apply_merges(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string Tokenizer::decode_byte_level(const std::vector<int32_t>& ids, bool skip_special) const {
  // Each token's characters back to bytes (a token with a character that is no byte's, an
  // added token such as "<|im_start|>" may have one, gives its own UTF-8), then UTF-8.
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0) fail("decode: token id {} is negative", id);
    if (id >= vocab_size()) continue;  // past the tokenizer's vocabulary: skipped, as HF does
    if (skip_special && special_[id]) continue;
    const std::string& p = pieces_[id];
    std::u32string cps = unicode::decode_utf8(p, fmt::format("token {}", id));
    std::string mapped;
    bool all_bytes = true;
    for (char32_t c : cps) {
      const int b = char_byte(c);
      if (b < 0) {
        all_bytes = false;
        break;
      }
      mapped.push_back(static_cast<char>(b));
    }
    bytes += all_bytes ? mapped : p;
  }
  return unicode::replace_ill_formed_utf8(bytes);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (byte_level_) return decode_byte_level(ids, skip_special);
  std::string out, bytes;
  auto flush_bytes = [&] {
    if (bytes.empty()) return;
    if (unicode::is_valid_utf8(bytes)) {
      out += bytes;
    } else {
      for (size_t k = 0; k < bytes.size(); ++k) out += "\xEF\xBF\xBD";  // U+FFFD per byte, as HF
    }
    bytes.clear();
  };
  for (int32_t id : ids) {
    if (id < 0) fail("decode: token id {} is negative", id);
    if (id >= vocab_size()) continue;  // past the tokenizer's vocabulary: skipped, as HF does
    if (skip_special && special_[id]) continue;
    if (byte_value_[id] >= 0) {
      bytes.push_back(static_cast<char>(byte_value_[id]));
      continue;
    }
    flush_bytes();
    const std::string& p = pieces_[id];
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, kMeta.size(), kMeta) == 0) {
        out.push_back(' ');
        i += kMeta.size();
      } else {
        out.push_back(p[i++]);
      }
    }
  }
  flush_bytes();
  // The prepended "▁" decodes to a leading space; drop one (HF's Strip decoder).
  const bool prefixed = norm_prepend_ || (metaspace_ && metaspace_prepend_ != Prepend::never);
  if (prefixed && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace moebench
