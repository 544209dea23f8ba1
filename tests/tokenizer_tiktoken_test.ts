/**
 * tiktoken rank files (no GPU): a hand-written rank file with ids derived by hand, the
 * Kimi K2 directory layout (tiktoken.model + tokenizer_config.json), and GPT-4o's real
 * o200k_base ranks (shipped by npm `js-tiktoken`) encoded by this library and by
 * js-tiktoken, which must agree id for id, before and after a round trip through
 * `tokenizer.json`.
 */
import assert from "node:assert/strict";
import { fc } from "./util.ts";
// Test-only peers (the library itself has no dependencies).
// deno-lint-ignore no-import-prefix
import { Tiktoken } from "npm:js-tiktoken@1.0.21/lite";
// deno-lint-ignore no-import-prefix
import o200k from "npm:js-tiktoken@1.0.21/ranks/o200k_base";
import { GPT4O_PATTERN, Tokenizer } from "../tokenizer/mod.ts";

const TINY = new URL("./fixtures/tiny.tiktoken", import.meta.url);
// Ranks: a 0, b 1, c 2, d 3, ab 4, bc 5, abc 6, cd 7, x 8, y 9, z 10, xyz 11, " " 12, "\n" 13.

Deno.test("tiny rank file: lowest-rank pair first; a word that is a token stays whole", async () => {
  const tok = await Tokenizer.fromTiktoken(TINY.pathname, { specialTokens: { "<eos>": 14 } });
  assert.equal(tok.vocabSize, 15);
  // a b c d: ab (4) < bc (5) < cd (7) -> ab c d; then abc (6) < cd (7) -> abc d.
  assert.deepEqual(tok.encode("abcd"), [6, 3]);
  // b c d: bc (5) < cd (7) -> bc d; "bcd" is not a token.
  assert.deepEqual(tok.encode("bcd"), [5, 3]);
  // " abcd" is one word (Kimi K2 pattern): " " + abc + d.
  assert.deepEqual(tok.encode(" abcd"), [12, 6, 3]);
  // No pair of x y z is a token, but the whole word is: tiktoken takes it as it is.
  assert.deepEqual(tok.encode("xyz"), [11]);
  assert.deepEqual(tok.encode("xy"), [8, 9]);
  assert.deepEqual(tok.encode("abcd<eos>\n"), [6, 3, 14, 13]);
  assert.equal(tok.decode([6, 3, 14, 13]), "abcd<eos>\n");
  assert.equal(tok.idToToken(12), "Ġ");
  assert.throws(() => tok.encode("q"), /byte 0x71 has no token/);
  // Written as tokenizer.json (ignore_merges: true) and read back: the same ids.
  const back = Tokenizer.fromHfJson(tok.toHfJson());
  for (const s of ["abcd", "bcd", " abcd", "xyz", "xy", "abcd<eos>\n", "cdab xyzabc"]) {
    assert.deepEqual(back.encode(s), tok.encode(s), s);
  }
  assert.throws(() => Tokenizer.fromTiktokenText("YQ== 0\nnot-base64! 1\n"), /line 2/);
  assert.throws(() => Tokenizer.fromTiktokenText("YQ== 0\nYg== 0\n"), /rank 0 appears twice/);
});

Deno.test("Kimi K2 layout: a directory with tiktoken.model and tokenizer_config.json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moongrad-tok-" });
  try {
    await Deno.copyFile(TINY.pathname, `${dir}/tiktoken.model`);
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({
        added_tokens_decoder: {
          "14": { content: "[BOS]", special: true },
          "15": { content: "[EOS]", special: true },
        },
      }),
    );
    const tok = await Tokenizer.load(dir);
    assert.equal(tok.vocabSize, 16);
    assert.deepEqual(tok.encode("[BOS]abcd[EOS]"), [14, 6, 3, 15]);
    assert.equal(tok.decode([14, 6, 3, 15], { skipSpecialTokens: true }), "abcd");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** js-tiktoken's compact rank table ("! offset tok tok ...") as a tiktoken rank file. */
function rankFile(compact: string): string {
  const out: string[] = [];
  for (const line of compact.split("\n")) {
    const [_, offset, ...tokens] = line.split(" ");
    tokens.forEach((t, i) => out.push(`${t} ${Number(offset) + i}`));
  }
  return out.join("\n");
}

Deno.test({
  name: "o200k_base: the same ids as js-tiktoken on text and arbitrary Unicode",
  fn: () => {
    const mine = Tokenizer.fromTiktokenText(rankFile(o200k.bpe_ranks), {
      pattern: GPT4O_PATTERN,
      specialTokens: o200k.special_tokens,
    });
    const ref = new Tiktoken(o200k);
    const corpus = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
    assert.deepEqual(mine.encode(corpus, { allowedSpecial: "none" }), ref.encode(corpus, [], []));
    assert.deepEqual(mine.encode("a<|endoftext|>b"), ref.encode("a<|endoftext|>b", "all"));
    const pieces = fc.constantFrom(
      "Hello",
      " world",
      "IT'S",
      "'ll",
      " 1234567",
      "\n\n",
      "   ",
      "\t",
      "中文",
      "日本語",
      "é",
      "e\u0301",
      "🚀",
      "CamelCase",
      "snake_case",
      "(){}",
      "://",
      "\r\n",
    );
    const texts = fc.oneof(
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.array(pieces, { maxLength: 12 }).map((p) => p.join("")),
    );
    fc.assert(
      fc.property(texts, (s) => {
        const ids = mine.encode(s, { allowedSpecial: "none" });
        assert.deepEqual(ids, ref.encode(s));
        assert.equal(mine.decode(ids), s.toWellFormed());
      }),
      { numRuns: 1500 },
    );
    // Through tokenizer.json (all splits of each token as merges, ignore_merges) and back.
    const back = Tokenizer.fromHfJson(mine.toHfJson());
    assert.deepEqual(back.encode(corpus), mine.encode(corpus));
    fc.assert(
      fc.property(texts, (s) => {
        const ids = back.encode(s);
        assert.deepEqual(ids, mine.encode(s));
        assert.equal(back.decode(ids), s.toWellFormed(), "HF-loaded: decode(encode(s)) = s");
      }),
      { numRuns: 500 },
    );
  },
});
