// tokenizer.h: a Hugging Face tokenizer.json whose model is BPE, in two kinds, through one
// pipeline: added tokens whose `normalized` is false are split out of the raw text (at each
// position the longest that starts there); each section between them is normalized, the
// added tokens whose `normalized` is true are split out of that, and each part left is
// pre-tokenized and merged. This is the order HF tokenizers works in (docs/FAMILIES.md,
// Tokenizers).
// Byte-level BPE (Qwen2 / Qwen3 files; GPT-2's layout, which GPT-NeoX-style files share):
//   NFC where the file asks for it, then the Qwen pre-tokenizer pattern or GPT-2's (ByteLevel
//   with its own regex, a space prepended to each part when add_prefix_space is set), each
//   piece's UTF-8 bytes as GPT-2's byte characters merged; no BOS; decode maps the
//   characters back to bytes.
// SentencePiece BPE (Mistral / Llama files):
//   encode: the normalizer (Prepend "▁" to each non-empty section, spaces -> "▁") or the
//           Metaspace pre-tokenizer (spaces -> "▁", "▁" prepended to the part at the
//           start of the text, or to every part, by its prepend_scheme); text split into
//           Unicode characters; characters not in the vocabulary fall back to their UTF-8
//           bytes as <0xNN> tokens (or <unk> without byte_fallback); merges applied
//           lowest rank first, leftmost first among equal ranks; BOS prepended.
//   decode: special tokens dropped (optional); "▁" -> " "; runs of <0xNN> tokens
//           reassembled into UTF-8 (invalid runs become U+FFFD per byte, as HF does);
//           one leading space stripped (the prepended "▁").
// A literal "<s>" in the text is thus the BOS token, as HF gives it (SentencePiece itself
// would encode it as text).
#pragma once
#include <array>
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
  // Negative ids are an Error; ids past the vocabulary are skipped, as HF does (a model's
  // vocabulary is often padded past its tokenizer's: Qwen3's 151,936 rows for 151,669 tokens).
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
  // Byte-level files: whether decode(encode(text)) gives NFC(text) back; not when a space is
  // put before each part (ByteLevel add_prefix_space) or added tokens take the white space
  // around them (lstrip, rstrip).
  bool text_round_trips() const { return round_trips_; }
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
  struct AddedText {
    std::string content;
    int32_t id;
    bool lstrip, rstrip;  // the white space before / after it goes with it
  };
  // Added tokens matched at one stage (raw text or normalized sections), longest first.
  struct AddedSet {
    std::vector<AddedText> tokens;
    std::array<bool, 256> first_byte{};  // a token starts with this byte
    void add(std::string content, int32_t id, bool lstrip, bool rstrip);
    void sort();
    bool empty() const { return tokens.empty(); }
  };
  enum class Pattern { qwen, gpt2 };       // byte-level pre-tokenizer patterns
  enum class Prepend { never, first, always };  // Metaspace's prepend_scheme

  // The sections of `text` between the set's tokens go to `section(text, offset)`, the
  // tokens' ids to `out`, in order. A token with lstrip (rstrip) takes the white space
  // (Unicode White_Space) before (after) it out of its neighbour section.
  template <class F>
  static void split_added(std::string_view text, const AddedSet& set, std::vector<int32_t>& out, F&& section);
  // One section between raw added tokens, starting at `offset` of the text.
  void encode_section(std::string_view section, size_t offset, std::vector<int32_t>& out) const;
  // The SentencePiece normalizer (Prepend, Replace) on a section.
  std::string normalize_sentencepiece(std::string_view section) const;
  // One part left after the normalized added tokens: pre-tokenized and merged.
  void encode_part(std::string_view part, bool at_text_start, std::vector<int32_t>& out) const;
  // Initial symbols of a normalized word: one id per character, bytes for unknown ones.
  void initial_symbols(std::string_view normalized, std::vector<int32_t>& ids) const;
  void apply_merges(std::vector<int32_t>& ids) const;
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
  // SentencePiece files: the normalizer's Prepend and Replace, or the Metaspace pre-tokenizer.
  bool norm_prepend_ = false;     // normalizer Prepend "▁" (each non-empty section)
  bool norm_replace_ = false;     // normalizer Replace " " by "▁"
  bool metaspace_ = false;        // pre_tokenizer Metaspace: " " -> "▁", then its prepend_scheme
  Prepend metaspace_prepend_ = Prepend::never;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  // Byte-level files.
  bool byte_level_ = false;
  bool nfc_ = false;                  // normalizer NFC
  Pattern pattern_ = Pattern::qwen;
  bool prefix_space_ = false;         // ByteLevel add_prefix_space: " " before each part not starting with one
  bool round_trips_ = true;           // text_round_trips()
  int32_t byte_symbol_ids_[256] = {}; // id of the character each byte stands for
  AddedSet raw_added_;                // added tokens with normalized false
  AddedSet normalized_added_;         // with normalized true, their content normalized
};

}  // namespace moebench
