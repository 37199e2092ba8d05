// check_tokenizer_fixture_hf.mjs: checks tests/fixtures/mistral/tokenizer.json with an
// independent implementation of HF tokenizer.json, the npm package @huggingface/tokenizers
// (tokenizers.js, Apache-2.0): the file must load as an HF tokenizer and reproduce every
// case of cases.json and random_cases.json, encode (ids) and decode (text). Exits 1 on
// any mismatch.
//
//   cd /tmp && npm pack @huggingface/tokenizers && mkdir -p hft && tar xzf huggingface-tokenizers-*.tgz -C hft
//   node tools/check_tokenizer_fixture_hf.mjs /tmp/hft/package
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const pkgDir = process.argv[2];
if (!pkgDir) {
  console.error('usage: node check_tokenizer_fixture_hf.mjs HF_TOKENIZERS_PACKAGE_DIR');
  process.exit(2);
}
const { Tokenizer } = await import(pathToFileURL(path.resolve(pkgDir, 'dist/tokenizers.mjs')).href);
const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../tests/fixtures/mistral');
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
// tokenizer_config.json of Mistral-7B / Mixtral: BOS added, no EOS, no clean-up of spaces.
const tok = new Tokenizer(read('tokenizer.json'), {
  add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>',
  clean_up_tokenization_spaces: false,
});
let failed = 0;
for (const file of ['cases.json', 'random_cases.json']) {
  const cases = read(file).cases;
  let bad = 0;
  for (const c of cases) {
    const ids = tok.encode(c.text).ids;
    const text = tok.decode(ids, { skip_special_tokens: true });
    if (JSON.stringify(ids) !== JSON.stringify(c.ids) || text !== c.text) {
      if (bad++ < 5) console.log(`MISMATCH ${JSON.stringify(c.text)}: want ${JSON.stringify(c.ids)} got ${JSON.stringify(ids)}, decoded ${JSON.stringify(text)}`);
    }
  }
  console.log(`${file}: ${cases.length} cases, ${bad} mismatches`);
  failed += bad;
}
process.exit(failed ? 1 : 0);
