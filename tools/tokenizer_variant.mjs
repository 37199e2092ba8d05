// tokenizer_variant.mjs: a copy of a tokenizer.json changed as a fixture variant says: each
// entry of `set` is [JSON pointer, value], then `append_added` is appended to added_tokens
// (tests/tokenizer_variant.h reads the same variants on the C++ side).
export function applyVariant(tokenizerJson, variant) {
  const tok = structuredClone(tokenizerJson);
  for (const [ptr, value] of variant.set) {
    const keys = ptr.split('/').slice(1);
    let o = tok;
    for (const k of keys.slice(0, -1)) o = o[k];
    o[keys[keys.length - 1]] = value;
  }
  tok.added_tokens.push(...variant.append_added);
  return tok;
}
