// tokenizer.cpp: loading an HF tokenizer.json (BPE model) and SentencePiece-BPE
// encode/decode. The merge loop is SentencePiece's: a doubly linked list of symbols
// and a min-heap of candidate pairs keyed by (rank, left position); stale heap
// entries are skipped when popped. O(n log n) in the number of characters.
#include "engine/tokenizer.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "common/error.h"
#include "common/log.h"

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

// Strict UTF-8 check (no overlongs, surrogates or code points above U+10FFFF).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c >> 5) == 0x6) { n = 2; cp = c & 0x1F; }
    else if ((c >> 4) == 0xE) { n = 3; cp = c & 0x0F; }
    else if ((c >> 3) == 0x1E) { n = 4; cp = c & 0x07; }
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
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

}  // namespace

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
  using AddedTokens = std::vector<std::pair<int32_t, bool>>;  // (id, special)
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
      auto [pos, fresh] = by_id.emplace(id, content);
      if (!fresh && pos->second != content)
        r.bad(field, fmt::format("id {} is \"{}\" here but \"{}\" in model.vocab", id, content, pos->second));
      auto [ppos, pfresh] = t.piece_to_id_.emplace(content, id);
      if (!pfresh && ppos->second != id)
        r.bad(field, fmt::format("\"{}\" has id {} here but {} elsewhere", content, id, ppos->second));
      added.emplace_back(id, special);
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
    for (auto [id, special] : added) t.special_[id] = special ? 1 : 0;
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
      t.add_dummy_prefix_ = true;
    } else if (nt == "Replace") {
      const json& pat = r.need_object(nz, "pattern", field + ".pattern");
      auto ps = pat.find("String");
      if (ps == pat.end() || !ps->is_string() || ps->get<std::string>() != " " ||
          r.need_string(nz, "content", field + ".content") != kMeta)
        r.bad(field, "expected Replace of \" \" by \"\u2581\"");
      t.spaces_to_meta_ = true;
    } else {
      r.bad(field + ".type", fmt::format("expected Prepend or Replace (Llama/Mistral normalizers), found \"{}\"", nt));
    }
  }

  void normalizer(const json& root) {
    t.add_dummy_prefix_ = false;
    t.spaces_to_meta_ = false;
    t.prefix_if_absent_only_ = false;
    auto it = root.find("normalizer");
    if (it == root.end() || it->is_null()) return;
    if (it->is_object() && it->value("type", "") == "Sequence") {
      const json& list = r.need_array(*it, "normalizers", "normalizer.normalizers");
      for (size_t i = 0; i < list.size(); ++i) one_normalizer(list[i], fmt::format("normalizer.normalizers[{}]", i));
    } else {
      one_normalizer(*it, "normalizer");
    }
  }

  // Newer Mistral files: normalizer null, Metaspace(replacement "▁", prepend_scheme first, split false).
  void pre_tokenizer(const json& root) {
    auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null()) return;
    if (!it->is_object()) r.bad("pre_tokenizer", fmt::format("expected null or an object, found {}", it->type_name()));
    const std::string pt = r.need_string(*it, "type", "pre_tokenizer.type");
    if (pt != "Metaspace") r.bad("pre_tokenizer.type", fmt::format("expected null or \"Metaspace\", found \"{}\"", pt));
    if (r.need_string(*it, "replacement", "pre_tokenizer.replacement") != kMeta)
      r.bad("pre_tokenizer.replacement", "expected \"\u2581\"");
    if (r.opt_bool(*it, "split", true, "pre_tokenizer.split"))
      r.bad("pre_tokenizer.split", "expected false (splitting into words is not SentencePiece semantics)");
    bool prepend = r.opt_bool(*it, "add_prefix_space", true, "pre_tokenizer.add_prefix_space");
    if (auto ps = it->find("prepend_scheme"); ps != it->end() && !ps->is_null()) {
      if (!ps->is_string()) r.bad("pre_tokenizer.prepend_scheme", "expected \"first\", \"always\" or \"never\"");
      const std::string s = ps->get<std::string>();
      if (s != "first" && s != "always" && s != "never")
        r.bad("pre_tokenizer.prepend_scheme", fmt::format("expected \"first\", \"always\" or \"never\", found \"{}\"", s));
      prepend = s != "never";
    }
    t.spaces_to_meta_ = true;
    t.add_dummy_prefix_ = prepend;
    t.prefix_if_absent_only_ = true;  // Metaspace does not prepend to text already starting with "▁"
  }

  // ---- special tokens ----
  void special_tokens(const json& model) {
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
    load.special_tokens(model);
  } catch (const json::exception& e) {  // a shape the checks above missed
    fail("{}: unexpected layout: {}", src, one_line(e.what()));
  }
  log::debug("{}: {} tokens, {} merges, byte_fallback {}", src, t.pieces_.size(), t.merges_.size(), t.byte_fallback_);
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

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(bos_id_);
  if (text.empty()) return out;

  std::string s;
  s.reserve(text.size() + 16);
  for (char c : text) {
    if (c == ' ' && spaces_to_meta_) s.append(kMeta);
    else s.push_back(c);
  }
  if (add_dummy_prefix_ && !(prefix_if_absent_only_ && s.starts_with(kMeta))) s.insert(0, kMeta);

  if (ignore_merges_) {
    if (auto it = piece_to_id_.find(s); it != piece_to_id_.end()) {
      out.push_back(it->second);
      return out;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(s.size());
  initial_symbols(s, ids);
  apply_merges(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out, bytes;
  auto flush_bytes = [&] {
    if (bytes.empty()) return;
    if (valid_utf8(bytes)) {
      out += bytes;
    } else {
      for (size_t k = 0; k < bytes.size(); ++k) out += "\xEF\xBF\xBD";  // U+FFFD per byte, as HF
    }
    bytes.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail("decode: token id {} out of range [0, {})", id, vocab_size());
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
  if (add_dummy_prefix_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace moebench
