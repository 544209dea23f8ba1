/**
 * Hugging Face `tokenizer.json` (no GPU): a hand-written GPT-2-style fixture with ids derived
 * by hand, both merges forms, added-token options, unsupported options as errors, and the
 * files this library writes read back by Hugging Face's own JavaScript port of `tokenizers`
 * (`@huggingface/tokenizers`), which must produce the same ids.
 */
import assert from "node:assert/strict";
import { fc } from "./util.ts";
// Test-only peer: Hugging Face's JavaScript port of tokenizers.
// deno-lint-ignore no-import-prefix
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import {
  GPT4O_PATTERN,
  KIMI_K2_PATTERN,
  Tokenizer,
  tokenizerConfigJson,
} from "../tokenizer/mod.ts";

const FIXTURE = new URL("./fixtures/gpt2_tiny_tokenizer.json", import.meta.url);
const JSON_TEXT = await Deno.readTextFile(FIXTURE);
const tiny = () => JSON.parse(JSON_TEXT);

// Merges of the fixture by priority: 0 "l l", 1 "h e", 2 "he ll", 3 "hell o", 4 "Ġ w",
// 5 "o r", 6 "Ġw or", 7 "Ġ h", 8 "Ġh e", 9 "H e", 10 "l d".
Deno.test("fixture: hand-derived ids of a GPT-2-style tokenizer.json", async () => {
  const tok = await Tokenizer.load(FIXTURE.pathname);
  assert.equal(tok.vocabSize, 23);
  // "Hello": H e l l o -> (l l) -> H e ll o -> (H e) -> He ll o.
  // " world": Ġ w o r l d -> (Ġ w) -> (o r) -> (Ġw or) -> (l d) -> Ġwor ld.
  assert.deepEqual(tok.encode("Hello world"), [20, 11, 7, 17, 21]);
  // "hello" -> ll, he, hell, hello. " hello": Ġ h e l l o -> ll (0) before he (1) before
  // Ġh (7); then hell, hello; "Ġ hello" has no merge, so Ġh and Ġhe never apply.
  assert.deepEqual(tok.encode("hello, hello!"), [14, 1, 10, 14, 0]);
  assert.deepEqual(tok.encode("Hello<|endoftext|> world"), [20, 11, 7, 22, 17, 21]);
  assert.equal(tok.decode([20, 11, 7, 22, 17, 21]), "Hello<|endoftext|> world");
  assert.equal(tok.decode([20, 22, 21], { skipSpecialTokens: true }), "Held");
  assert.equal(tok.idToToken(17), "Ġwor");
  assert.equal(tok.tokenToId("Ġwor"), 17);
  assert.throws(() => tok.encode("hi"), /byte 0x69 has no token/);
});

Deno.test("fixture variants: Split, [a, b] merges, add_prefix_space, ignore_merges, unk_token", () => {
  const split = tiny();
  split.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { String: "-" }, behavior: "Removed", invert: false },
      { type: "ByteLevel", add_prefix_space: false, use_regex: false },
    ],
  };
  assert.deepEqual(Tokenizer.fromHfJson(split).encode("hello-hello"), [14, 14]);

  const pairs = tiny();
  pairs.model.merges = pairs.model.merges.map((m: string) => m.split(" "));
  assert.deepEqual(Tokenizer.fromHfJson(pairs).encode("Hello world"), [20, 11, 7, 17, 21]);

  const prefix = tiny();
  prefix.pre_tokenizer.add_prefix_space = true;
  // " Hello": Ġ H e l l o -> Ġ He ll o (no "Ġ H" merge).
  assert.deepEqual(Tokenizer.fromHfJson(prefix).encode("Hello"), [10, 20, 11, 7]);

  const ignore = tiny();
  ignore.model.ignore_merges = true;
  // " he" is not a token; "Ġhe" is, and ignore_merges takes the whole word as it is.
  assert.deepEqual(Tokenizer.fromHfJson(tiny()).encode("he he"), [12, 10, 12]);
  assert.deepEqual(Tokenizer.fromHfJson(ignore).encode("he he"), [12, 19]);

  const unk = tiny();
  unk.model.vocab["<unk>"] = 23;
  unk.model.unk_token = "<unk>";
  assert.deepEqual(Tokenizer.fromHfJson(unk).encode("hi"), [5, 23]);
  unk.model.fuse_unk = true;
  assert.deepEqual(Tokenizer.fromHfJson(unk).encode("hii"), [5, 23]);
});

Deno.test("added tokens: lstrip / rstrip swallow spaces, single_word needs word edges", () => {
  const j = tiny();
  j.added_tokens.push(
    { id: 23, content: "[S]", single_word: false, lstrip: true, rstrip: true, special: true },
    { id: 24, content: "ow", single_word: true, lstrip: false, rstrip: false, special: false },
    { id: 25, content: "<|im-end|>", special: true },
  );
  const tok = Tokenizer.fromHfJson(j);
  assert.deepEqual(tok.encode("hello<|im-end|>"), [14, 25], "regex characters are literal");
  assert.deepEqual(tok.encode("he [S] he"), [12, 23, 12]);
  assert.deepEqual(tok.encode("ow"), [24]);
  assert.deepEqual(tok.encode("wow"), [9, 7, 9], "inside a word it is ordinary text");
  // Not allowed, "[S]" is text, and this tiny vocabulary has no "[" byte.
  assert.throws(() => tok.encode("he [S] he", { allowedSpecial: "none" }), /byte 0x5b/);
  assert.deepEqual(tok.encode("ow", { allowedSpecial: "none" }), [24], "non-special: always");
});

Deno.test("post_processor TemplateProcessing adds BOS only when asked; NFC normalizer", () => {
  const j = tiny();
  j.post_processor = {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|endoftext|>", type_id: 0 } }, {
      Sequence: { id: "A", type_id: 0 },
    }],
    pair: [],
    special_tokens: { "<|endoftext|>": { id: "<|endoftext|>", ids: [22], tokens: [] } },
  };
  const tok = Tokenizer.fromHfJson(j);
  assert.deepEqual(tok.encode("hello"), [14]);
  assert.deepEqual(tok.encode("hello", { addSpecialTokens: true }), [22, 14]);
  const nfc = tiny();
  nfc.normalizer = { type: "NFC" };
  nfc.model.vocab["Ã©"] = 23; // byte-level text of é's UTF-8 bytes c3 a9
  nfc.model.vocab["Ã"] = 24;
  nfc.model.vocab["©"] = 25;
  nfc.model.merges.push("Ã ©");
  assert.deepEqual(Tokenizer.fromHfJson(nfc).encode("e\u0301"), [23]);
});

Deno.test("unsupported tokenizer.json features are errors that name them", () => {
  // deno-lint-ignore no-explicit-any
  const bad = (edit: (j: any) => void, re: RegExp) => {
    const j = tiny();
    edit(j);
    assert.throws(() => Tokenizer.fromHfJson(j), re);
  };
  bad((j) => (j.model.type = "WordPiece"), /model type "WordPiece" is not supported/);
  bad((j) => (j.model.dropout = 0.1), /dropout/);
  bad((j) => (j.model.continuing_subword_prefix = "##"), /continuing_subword_prefix/);
  bad((j) => (j.pre_tokenizer = { type: "Whitespace" }), /"Whitespace" is not supported/);
  bad((j) => (j.pre_tokenizer = null), /no ByteLevel step/);
  bad((j) => (j.decoder = { type: "WordPiece" }), /decoder type "WordPiece"/);
  bad((j) => (j.normalizer = { type: "Lowercase" }), /normalizer type "Lowercase"/);
  bad((j) => j.model.merges.push("x y"), /merge 11 "x y": "x" is not in the vocab/);
  bad((j) => j.model.merges.push("Ġ Ġ"), /"ĠĠ" is not in the vocab/);
  bad((j) => (j.model.vocab.dup = 3), /id 3 is used by both/);
  assert.throws(() => Tokenizer.fromHfJson("{"), /not JSON/);
});

/** The files this library writes, read by Hugging Face's JavaScript `tokenizers`. */
function hfPort(tok: Tokenizer): HfTokenizer {
  return new HfTokenizer(JSON.parse(tok.toHfJson()), JSON.parse(tokenizerConfigJson(tok)));
}

Deno.test("written tokenizer.json: @huggingface/tokenizers reads it and agrees on ids", () => {
  const corpus = Deno.readTextFileSync(new URL("../README.md", import.meta.url));
  for (const pattern of [KIMI_K2_PATTERN, GPT4O_PATTERN]) {
    const tok = Tokenizer.train(corpus, {
      vocabSize: 600,
      pattern,
      specialTokens: ["<|endoftext|>"],
    });
    const hf = hfPort(tok);
    const ids = (s: string) => Array.from(hf.encode(s, { add_special_tokens: false }).ids);
    assert.deepEqual(ids(corpus), tok.encode(corpus));
    assert.deepEqual(ids("a <|endoftext|> b"), tok.encode("a <|endoftext|> b"));
    const words = fc.constantFrom("the", " model", "K2", " 12345", "\n\n", "  ", "é", "中文", "'s");
    fc.assert(
      fc.property(fc.array(words, { minLength: 1, maxLength: 20 }), (ws) => {
        const s = ws.join("");
        assert.deepEqual(ids(s), tok.encode(s));
        assert.equal(hf.decode(tok.encode(s)), s);
      }),
      { numRuns: 200 },
    );
  }
  // The fixture, loaded and written back, keeps its ids in the port too.
  const fixture = Tokenizer.fromHfJson(JSON_TEXT);
  assert.deepEqual(
    Array.from(hfPort(fixture).encode("hello, hello!", { add_special_tokens: false }).ids),
    [14, 1, 10, 14, 0],
  );
});
