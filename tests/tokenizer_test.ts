/**
 * Tokenizer core (no GPU): the byte-level alphabet, split-pattern translation and split
 * behaviours, BPE merging (scan vs heap), the trainer against a from-scratch reference,
 * and the trained tokenizer's round trips, special tokens, determinism and save → load.
 */
import assert from "node:assert/strict";
import { fc } from "./util.ts";
import {
  BYTE_TO_CHAR,
  byteLevelToBytes,
  bytesToByteLevel,
  ByteTokenizer,
  compileSplitPattern,
  countWords,
  GPT2_PATTERN,
  GPT4O_PATTERN,
  KIMI_K2_PATTERN,
  MergeTable,
  mergeWord,
  type SplitBehavior,
  splitByRegex,
  Tokenizer,
  trainBpe,
  validUtf8Length,
} from "../tokenizer/mod.ts";

const enc = new TextEncoder();
/** Text of this repository: a realistic training corpus for the tests (~40 KB). */
const CORPUS = [
  await Deno.readTextFile(new URL("../README.md", import.meta.url)),
  await Deno.readTextFile(new URL("../cli/train.ts", import.meta.url)),
].join("\n");
const TRAINED = Tokenizer.train(CORPUS, {
  vocabSize: 700,
  specialTokens: ["<|endoftext|>", "<|pad|>"],
});

Deno.test("byte-level alphabet: GPT-2's bytes_to_unicode, a bijection on 256 bytes", () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  // Printable bytes stand for themselves; the others are U+0100.. in byte order.
  assert.equal(BYTE_TO_CHAR[0x41], "A");
  assert.equal(BYTE_TO_CHAR[0xe9], "é");
  assert.equal(BYTE_TO_CHAR[0], "\u0100");
  assert.equal(BYTE_TO_CHAR[0x0a], "Ċ");
  assert.equal(BYTE_TO_CHAR[0x20], "Ġ");
  assert.equal(BYTE_TO_CHAR[0x7f], "ġ"); // DEL: the 34th unprintable byte -> U+0121
  assert.equal(BYTE_TO_CHAR[0xad], "Ń"); // soft hyphen: the last one -> U+0143
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (b) => {
      assert.deepEqual(byteLevelToBytes(bytesToByteLevel(b)), b);
    }),
  );
  assert.equal(byteLevelToBytes("a b"), null, "a raw space is not in the alphabet");
});

Deno.test("split patterns: Kimi K2 isolates Han; \\s means White_Space; (?i:) contractions", () => {
  const kimi = compileSplitPattern(KIMI_K2_PATTERN);
  const gpt4o = compileSplitPattern(GPT4O_PATTERN);
  assert.deepEqual("mixed中文text".match(kimi), ["mixed", "中文", "text"]);
  assert.deepEqual("mixed中文text".match(gpt4o), ["mixed中文text"]);
  assert.deepEqual("IT'S it's".match(gpt4o), ["IT'S", " it's"]);
  assert.deepEqual(
    "Hello  world\n\n12345".match(kimi),
    ["Hello", " ", " world", "\n\n", "123", "45"],
  );
  // U+FEFF is not White_Space (Rust regex, Oniguruma) though JavaScript's \s includes it.
  assert.deepEqual("a \ufeffb".match(compileSplitPattern(GPT2_PATTERN)), ["a", " \ufeff", "b"]);
  // A class intersection switches to the v flag; its reserved literals get escaped.
  const v = compileSplitPattern("[\\p{L}&&[a-z]]+|[(){}/|-]+");
  assert.equal(v.flags, "gv");
  assert.deepEqual("ab(){}/|-Xc".match(v), ["ab", "(){}/|-", "c"]);
  assert.deepEqual("a一丁b".match(compileSplitPattern("[\\x{4E00}-\\x{4E01}]+|\\x{61}")), [
    "a",
    "一丁",
  ]);
  assert.throws(() => compileSplitPattern("\\p{L}++"), /possessive quantifier/);
  assert.throws(() => compileSplitPattern("\\p{NoSuchThing}"), /unknown property/);
});

Deno.test("split behaviours match Hugging Face's documented examples", () => {
  const cases: [SplitBehavior, boolean, string[]][] = [
    ["Removed", false, ["the", "final", "countdown"]],
    ["Isolated", false, ["the", "-", "final", "-", "-", "countdown"]],
    ["MergedWithPrevious", false, ["the-", "final-", "-", "countdown"]],
    ["MergedWithNext", false, ["the", "-final", "-", "-countdown"]],
    ["Contiguous", false, ["the", "-", "final", "--", "countdown"]],
    ["Removed", true, ["-", "-", "-"]],
  ];
  for (const [behavior, invert, want] of cases) {
    const out: string[] = [];
    splitByRegex("the-final--countdown", /-/gu, behavior, invert, out);
    assert.deepEqual(out, want, `${behavior}${invert ? " inverted" : ""}`);
  }
});

Deno.test("BPE merging: the heap (long words) and the scan (short words) agree", () => {
  // Random merge tables over a small alphabet; HF-style unique ranks or tiktoken-style ranks
  // (rank = id of the joined token, shared by every pair that joins into it).
  const arb = fc.record({
    pairs: fc.array(fc.tuple(fc.nat(11), fc.nat(11)), { minLength: 1, maxLength: 60 }),
    rankByResult: fc.boolean(),
    word: fc.array(fc.nat(5), { maxLength: 120 }),
  });
  fc.assert(
    fc.property(arb, ({ pairs, rankByResult, word }) => {
      // Joined tokens (6..11) take part in later pairs, so merges nest several levels deep.
      const t = new MergeTable();
      pairs.forEach(([l, r], i) => {
        const result = 6 + (rankByResult ? (l * 3 + r) % 6 : i % 6);
        t.add(l, r, rankByResult ? result : i, result);
      });
      assert.deepEqual(mergeWord([...word], t, "heap"), mergeWord([...word], t, "scan"));
    }),
    { numRuns: 1000 },
  );
});

/** Reference trainer: recount every pair from scratch after each merge. */
function referenceMerges(words: Map<string, number>, merges: number): [number, number][] {
  let ws = [...words].map(([w, c]) => [Array.from(enc.encode(w)), c] as [number[], number]);
  const out: [number, number][] = [];
  for (let t = 256; out.length < merges; t++) {
    const counts = new Map<string, number>();
    for (const [s, c] of ws) {
      for (let i = 0; i + 1 < s.length; i++) {
        const k = `${s[i]},${s[i + 1]}`;
        counts.set(k, (counts.get(k) ?? 0) + c);
      }
    }
    let best: [number, number] | null = null;
    let bestCount = 0;
    for (const [k, c] of counts) {
      const [a, b] = k.split(",").map(Number);
      if (
        c > bestCount ||
        (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))
      ) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best || bestCount < 2) break;
    out.push(best);
    ws = ws.map(([s, c]) => {
      const n: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === best![0] && s[i + 1] === best![1]) {
          n.push(t);
          i++;
        } else n.push(s[i]);
      }
      return [n, c];
    });
  }
  return out;
}

Deno.test("trainer: incremental pair counting learns the same merges as recounting", () => {
  const word = fc.string({ unit: fc.constantFrom("a", "b", "c", "é"), minLength: 1, maxLength: 9 });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(word, fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 1, max: 30 }),
      (list, merges) => {
        const words = new Map<string, number>();
        for (const [w, c] of list) words.set(w, (words.get(w) ?? 0) + c);
        assert.deepEqual(trainBpe(words, { merges }).merges, referenceMerges(words, merges));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("trainer: deterministic, byte tokens first, specials last, compresses its corpus", () => {
  const again = Tokenizer.train(CORPUS, {
    vocabSize: 700,
    specialTokens: ["<|endoftext|>", "<|pad|>"],
  });
  assert.equal(again.toHfJson(), TRAINED.toHfJson());
  assert.equal(TRAINED.vocabSize, 700);
  assert.equal(TRAINED.tokenToId("<|endoftext|>"), 698);
  assert.equal(TRAINED.tokenToId("<|pad|>"), 699);
  for (let b = 0; b < 256; b++) assert.equal(TRAINED.tokenToId(BYTE_TO_CHAR[b]), b);
  const ids = TRAINED.encode(CORPUS, { allowedSpecial: "none" });
  const ratio = enc.encode(CORPUS).length / ids.length;
  assert.ok(ratio > 2, `bytes per token on the training text: ${ratio.toFixed(2)}`);
  // A word seen in training is one token or a few.
  assert.ok(TRAINED.encode(" the").length === 1, "' the' is a learned token");
  assert.deepEqual(countWords(["the cat the hat"], GPT2_PATTERN).get(" the"), 1);
  // Asking for more merges than the text supports stops early.
  const small = Tokenizer.train("abab", { vocabSize: 300 });
  assert.equal(small.vocabSize, 257);
  assert.throws(() => Tokenizer.train("x", { vocabSize: 100 }), /vocabSize must be/);
  assert.throws(
    () => Tokenizer.train("x", { vocabSize: 300, specialTokens: ["<s>", "<s>"] }),
    /distinct and non-empty/,
  );
});

const anyText = fc.string({ unit: "binary", maxLength: 80 });

Deno.test("trained tokenizer: decode(encode(s)) = s on arbitrary Unicode", () => {
  fc.assert(
    fc.property(anyText, (s) => {
      const want = s.toWellFormed(); // lone surrogates have no UTF-8; TextEncoder uses U+FFFD
      assert.equal(TRAINED.decode(TRAINED.encode(s)), want);
      assert.equal(TRAINED.decode(TRAINED.encode(s, { allowedSpecial: "none" })), want);
      assert.deepEqual(TRAINED.encodeBytes(enc.encode(s)), TRAINED.encodeInt32(s));
    }),
    { numRuns: 1000 },
  );
  // Text in the style of the corpus, with words it has merges for.
  const words = fc.constantFrom("the", " model", "const", " =", "\n", "  ", "(", "é", "日本", "🚀");
  fc.assert(
    fc.property(fc.array(words, { maxLength: 30 }), (ws) => {
      const s = ws.join("");
      assert.equal(TRAINED.decode(TRAINED.encode(s)), s);
    }),
  );
});

Deno.test("encodeBytes is lossless on arbitrary bytes; decode replaces only invalid bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
      const ids = TRAINED.encodeBytes(b);
      assert.deepEqual(TRAINED.decodeBytes(ids), b);
      assert.equal(TRAINED.decode(ids), new TextDecoder().decode(b));
    }),
    { numRuns: 1000 },
  );
  // A character whose bytes are split across tokens decodes whole; a stray byte is U+FFFD.
  const e = enc.encode("é"); // c3 a9: two byte tokens
  assert.equal(TRAINED.decode([e[0], e[1]]), "é");
  assert.equal(TRAINED.decode([e[0], ...TRAINED.encode("x")]), "\ufffdx");
  assert.equal(TRAINED.decode(TRAINED.encodeBytes(Uint8Array.of(0xff, 0x61))), "\ufffda");
  assert.deepEqual(Array.from(TRAINED.encodeBytes(Uint8Array.of(0xff))), [0xff]);
  assert.equal(validUtf8Length(Uint8Array.of(0x61, 0xe2, 0x82), 0), 1, "truncated sequence");
  assert.equal(validUtf8Length(Uint8Array.of(0xed, 0xa0, 0x80), 0), 0, "surrogate");
  assert.equal(validUtf8Length(Uint8Array.of(0xc0, 0x80), 0), 0, "overlong");
  assert.throws(() => TRAINED.decode([700]), /token id 700 at position 0/);
  assert.throws(() => TRAINED.decode([-1]), /not in the vocabulary/);
});

Deno.test("special tokens: one id when allowed, plain text when not; skipped on request", () => {
  const eot = TRAINED.tokenToId("<|endoftext|>")!;
  const ids = TRAINED.encode("a<|endoftext|>b<|pad|>");
  assert.deepEqual(ids.filter((i) => i >= 698), [eot, 699]);
  assert.equal(TRAINED.decode(ids), "a<|endoftext|>b<|pad|>");
  assert.equal(TRAINED.decode(ids, { skipSpecialTokens: true }), "ab");
  const plain = TRAINED.encode("a<|endoftext|>b", { allowedSpecial: "none" });
  assert.ok(plain.every((i) => i < 698), "no special id");
  assert.equal(TRAINED.decode(plain), "a<|endoftext|>b");
  const only = TRAINED.encode("<|pad|><|endoftext|>", { allowedSpecial: new Set(["<|pad|>"]) });
  assert.equal(only[0], 699);
  assert.ok(only.slice(1).every((i) => i < 698));
  assert.equal(TRAINED.idToToken(eot), "<|endoftext|>");
});

Deno.test("save -> load: the same tokenizer.json and the same encodings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moongrad-tok-" });
  try {
    await TRAINED.save(dir);
    const back = await Tokenizer.load(dir);
    assert.equal(back.toHfJson(), TRAINED.toHfJson());
    assert.equal(back.vocabSize, TRAINED.vocabSize);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    assert.equal(cfg.tokenizer_class, "PreTrainedTokenizerFast");
    assert.equal(cfg.added_tokens_decoder["698"].content, "<|endoftext|>");
    fc.assert(
      fc.property(anyText, (s) => assert.deepEqual(back.encode(s), TRAINED.encode(s))),
      { numRuns: 300 },
    );
    const file = await Tokenizer.load(`${dir}/tokenizer.json`);
    assert.deepEqual(file.encode(CORPUS), TRAINED.encode(CORPUS));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ByteTokenizer: identity on bytes; its tokenizer.json loads as the same mapping", async () => {
  const bytes = new ByteTokenizer();
  const dir = await Deno.makeTempDir({ prefix: "moongrad-tok-" });
  try {
    await bytes.save(dir);
    const loaded = await Tokenizer.load(dir);
    assert.equal(loaded.vocabSize, 256);
    fc.assert(
      fc.property(anyText, (s) => {
        const ids = bytes.encode(s);
        assert.deepEqual(ids, Array.from(enc.encode(s)));
        assert.deepEqual(loaded.encode(s), ids);
        assert.equal(bytes.decode(ids), s.toWellFormed());
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 32 }), (b) => {
        assert.deepEqual(bytes.decodeBytes(bytes.encodeBytes(b)), b);
        assert.deepEqual(loaded.encodeBytes(b), bytes.encodeBytes(b));
      }),
    );
    assert.equal(bytes.idToToken(32), "Ġ");
    assert.equal(bytes.tokenToId("Ġ"), 32);
    assert.throws(() => bytes.decode([256]), /not a byte/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
