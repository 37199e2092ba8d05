// tokenizer.h: the Mistral/Llama tokenizer, loaded from a Hugging Face tokenizer.json
// whose model is BPE, with SentencePiece-BPE semantics:
//   encode: "▁" prepended to non-empty text, spaces -> "▁"; text split into Unicode
//           characters; characters not in the vocabulary fall back to their UTF-8
//           bytes as <0xNN> tokens (or <unk> without byte_fallback); merges applied
//           lowest rank first, leftmost first among equal ranks; BOS prepended.
//   decode: special tokens dropped (optional); "▁" -> " "; runs of <0xNN> tokens
//           reassembled into UTF-8 (invalid runs become U+FFFD per byte, as HF does);
//           one leading space stripped (the prepended "▁").
// Special tokens in the text (a literal "<s>") are encoded as plain text, as
// SentencePiece does; HF would match them as added tokens.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moebench {

class Tokenizer {
 public:
  // Reads tokenizer.json; any problem is an Error naming the file and field.
  static Tokenizer load(const std::string& path);
  // Same from the text of a tokenizer.json; `source` names it in errors.
  static Tokenizer from_json_text(const std::string& json_text, const std::string& source);

  std::vector<int32_t> encode(const std::string& text, bool add_bos = true) const;
  // Ids out of range are an Error.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;

  // The token's piece as stored in the vocabulary ("▁the", "<0x0A>", "<s>").
  const std::string& token_text(int32_t id) const;
  // Id of a piece, or -1.
  int32_t token_id(std::string_view piece) const;
  bool is_special(int32_t id) const;
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }

 private:
  friend struct TokenizerLoader;  // the steps of from_json_text (tokenizer.cpp)
  struct Merge {
    int32_t rank;    // lower merges first
    int32_t result;  // id of the merged piece
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // Initial symbols of a normalized word: one id per character, bytes for unknown ones.
  void initial_symbols(std::string_view normalized, std::vector<int32_t>& ids) const;
  void apply_merges(std::vector<int32_t>& ids) const;

  std::vector<std::string> pieces_;                   // (vocab_size,) id -> piece
  std::vector<int16_t> byte_value_;                   // (vocab_size,) 0..255 for <0xNN>, else -1
  std::vector<uint8_t> special_;                      // (vocab_size,) 1 for special added tokens
  std::unordered_map<std::string, int32_t> piece_to_id_;
  std::unordered_map<uint64_t, Merge> merges_;        // (left id, right id) -> merge
  int32_t byte_ids_[256] = {};                        // <0xNN> ids, valid when has_byte_tokens_
  bool has_byte_tokens_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool add_dummy_prefix_ = true;  // prepend "▁"
  bool spaces_to_meta_ = true;    // " " -> "▁"
  bool prefix_if_absent_only_ = false;  // Metaspace: no "▁" prepended to text already starting with one
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
};

}  // namespace moebench
