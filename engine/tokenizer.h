// tokenizer.h: a Hugging Face tokenizer.json whose model is BPE, in two kinds.
// Byte-level BPE (Qwen2 / Qwen3 files; docs/FAMILIES.md, Tokenizers): added tokens split
// out of the raw text, NFC, the Qwen pre-tokenizer pattern, each piece's UTF-8 bytes as
// GPT-2's byte characters merged; no BOS; decode maps the characters back to bytes.
// SentencePiece BPE (Mistral / Llama files):
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

  // add_bos: the BOS token first where the tokenizer has one (SentencePiece files; a
  // byte-level file such as Qwen's has none). Byte-level: text that is not valid UTF-8
  // is an Error.
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
  // Byte-level BPE (GPT-2 style bytes-as-characters, Qwen2/Qwen3 files) rather than
  // SentencePiece BPE (Llama / Mistral files).
  bool byte_level() const { return byte_level_; }
  // Merge-pair lookups this thread's encodes have made so far: the merge loop's work, which
  // a test holds to O(n) for n symbols (no verdict on a machine's speed).
  static uint64_t pair_lookups_on_this_thread();

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
  // Byte-level: added tokens split out, NFC, the pre-tokenizer's pieces, each piece's
  // bytes as characters merged.
  void encode_byte_level(const std::string& text, std::vector<int32_t>& out) const;
  void encode_byte_level_piece(std::string_view bytes, std::vector<int32_t>& out) const;
  std::string decode_byte_level(const std::vector<int32_t>& ids, bool skip_special) const;

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
  // Byte-level files.
  bool byte_level_ = false;
  bool nfc_ = false;                  // normalizer NFC
  int32_t byte_symbol_ids_[256] = {}; // id of the character each byte stands for
  struct AddedText {
    std::string content;
    int32_t id;
  };
  std::vector<AddedText> added_texts_;  // matched in the raw text, longest first at a position
};

}  // namespace moebench
