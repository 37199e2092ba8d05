// make_mistral_added_cases.mjs: writes tests/fixtures/mistral/added_cases.json: texts with
// added tokens in them ("<s>", "</s>", "<unk>", whole and cut off, next to spaces) and the
// ids an independent implementation of HF tokenizer.json, the npm package
// @huggingface/tokenizers, gives them (no BOS added) under tests/fixtures/mistral/tokenizer.json
// as published and changed as other SentencePiece-BPE files are: Metaspace as pre-tokenizer
// (prepend_scheme first or always, no normalizer), an added token matched after
// normalizing, and added tokens that take the white space before (<s>: lstrip) or after
// (</s>: rstrip) them. Each variant is a change to the file (JSON pointer -> value, added tokens
// appended) with its cases.
//
//   cd /tmp && npm pack @huggingface/tokenizers && mkdir -p hft && tar xzf huggingface-tokenizers-*.tgz -C hft
//   node tools/make_mistral_added_cases.mjs /tmp/hft/package
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { applyVariant } from './tokenizer_variant.mjs';

const hftDir = process.argv[2];
if (!hftDir) {
  console.error('usage: node make_mistral_added_cases.mjs HF_TOKENIZERS_PACKAGE_DIR');
  process.exit(2);
}
const { Tokenizer } = await import(pathToFileURL(path.resolve(hftDir, 'dist/tokenizers.mjs')).href);
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../tests/fixtures/mistral');
const base = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));

let seed = 20261207;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
const pick = (a) => a[Math.floor(rand() * a.length)];
const parts = [
  () => pick(['hello', 'world', 'Hello', 'the', 'Mixtral', 'experts', '[INST]', '[/INST]', 'naïve', '東京', '😀']),
  () => pick(['<s>', '</s>', '<unk>', '<s', 's>', '</s', '< s>', '<s><s>', '</s><s>', '<unk>x']),
  () => pick([' ', '  ', '\n', '\t', ' \n ']),
  () => pick(['.', ',', '!', '?', '1234', 'hello world', 'hello  world']),
];
const texts = ['<s>', '</s>', '<s>[INST] hi [/INST]', 'hello </s> world', ' <s> ', '<s>hello', 'a<unk>b', '<s ></s>',
  'hello world', 'say hello world</s>hello world', 'a \t\n<s>b', 'a</s> \u00a0\u3000 b', ' \u2003</s>\u2003 <s> '];
while (texts.length < 160) {
  let s = '';
  const n = 1 + Math.floor(rand() * 8);
  for (let k = 0; k < n; ++k) {
    s += pick(parts)();
    if (rand() < 0.4) s += ' ';
  }
  texts.push(s);
}
const metaspace = (scheme) => ({ type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split: false });
const variants = [
  { name: 'as_published', set: [], append_added: [] },
  { name: 'metaspace_first', set: [['/normalizer', null], ['/pre_tokenizer', metaspace('first')]], append_added: [] },
  { name: 'metaspace_always', set: [['/normalizer', null], ['/pre_tokenizer', metaspace('always')]], append_added: [] },
  { name: 'normalized_added_token', set: [], append_added: [
    { id: 32000, content: 'hello world', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false }] },
  { name: 'lstrip_rstrip', set: [['/added_tokens/1/lstrip', true], ['/added_tokens/2/rstrip', true]], append_added: [] },
];
const config = { clean_up_tokenization_spaces: false };
for (const v of variants) {
  const t = new Tokenizer(applyVariant(base, v), config);
  v.cases = texts.map((text) => ({ text, ids: t.encode(text, { add_special_tokens: false }).ids }));
}
fs.writeFileSync(path.join(dir, 'added_cases.json'), JSON.stringify({
  source: '@huggingface/tokenizers on tests/fixtures/mistral/tokenizer.json, changed per variant', variants }));
console.log(`${dir}/added_cases.json: ${variants.length} variants of ${texts.length} texts`);
