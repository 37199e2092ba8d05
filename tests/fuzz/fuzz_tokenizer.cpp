// fuzz_tokenizer.cpp: fuzz target for tokenizer.json (SentencePiece and byte-level BPE, Qwen's
// and GPT-2's layouts, added tokens raw and normalized, with lstrip/rstrip). An
// accepted tokenizer must encode a few fixed texts (ASCII, spaces, multi-byte, invalid
// UTF-8) into ids inside its vocabulary and decode them (a byte-level one back to the
// text), and decode every id of a small vocabulary.
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

using namespace moebench;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    Tokenizer t = Tokenizer::from_json_text(text, "tokenizer.json");
    const int vocab = t.vocab_size();
    for (int32_t id : {t.bos_id(), t.eos_id(), t.unk_id()})
      fuzz::check(id >= -1 && id < vocab, "special id " + std::to_string(id) + " outside the vocabulary");
    for (const char* s : {"", "Hello world", "  a\n\tb  ", "caf\xc3\xa9 \xe2\x96\x81x \xf0\x9f\x98\x80", "\xff\xfe\xc3",
                          "<s> </s> <unk>"}) {
      std::vector<int32_t> ids;
      try {
        ids = t.encode(s);
      } catch (const Error&) {
        continue;  // a vocabulary may be unable to spell the text (no byte fallback, no <unk>)
      }
      for (int32_t id : ids)
        fuzz::check(id >= 0 && id < vocab, "encode gave id " + std::to_string(id) + " of " + std::to_string(vocab));
      t.decode(ids, true);
      // Byte-level: every byte is a token, so valid UTF-8 (these texts are already NFC) comes back,
      // but for the spaces put before parts or taken by added tokens, and up to NFC (an added
      // token matched after normalizing decodes to its content as written).
      if (t.byte_level() && t.text_round_trips()) {
        const std::string back = unicode::encode_utf8(unicode::nfc(unicode::decode_utf8(t.decode(ids, false), "decoded")));
        fuzz::check(back == s, std::string("byte-level round trip of \"") + s + "\"");
      }
      t.decode(ids, false);
    }
    std::vector<int32_t> all;
    for (int32_t id = 0; id < std::min(vocab, 512); ++id) {
      all.push_back(id);
      fuzz::check(t.token_id(t.token_text(id)) >= 0, "token " + std::to_string(id) + " has no id for its own text");
      t.is_special(id);
    }
    t.decode(all, false);
  } catch (const Error&) {
  }
  return 0;
}
