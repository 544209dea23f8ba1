/**
 * Tokenizer speed on the CPU (no GPU): encoding the trainer's default corpus
 * (`data/moongrad-src-v1.txt`, 1.47 MB of this repository's TypeScript and Markdown) and
 * training BPE on it.
 *
 * - BPE 2048 (Kimi K2 split pattern, trained on the same text), with a cold word cache (a new
 *   tokenizer each iteration, as when a training run tokenises its corpus) and a warm one.
 * - GPT-4o's o200k_base ranks (shipped by npm `js-tiktoken`): moongrad beside js-tiktoken and
 *   Hugging Face's JavaScript `tokenizers` (reading the tokenizer.json moongrad writes for
 *   those ranks); each peer's ids are checked against moongrad's once.
 * - Training a 4096-token BPE from the raw text (pre-tokenising and counting included).
 *
 * Each case is one harness group (bench/harness.ts) with moongrad as the baseline, in MB/s of
 * UTF-8 input (tokenizers run at MB/s, not GB/s); peers' ids must equal moongrad's exactly.
 *
 *   deno task bench bench/tokenizer_bench.ts
 */
// deno-lint-ignore-file no-import-prefix
import { Tiktoken } from "npm:js-tiktoken@1.0.21/lite";
import o200k from "npm:js-tiktoken@1.0.21/ranks/o200k_base";
import { Tokenizer as HfTokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { DEFAULT_CORPUS, loadDefaultCorpus } from "../cli/data.ts";
import { GPT4O_PATTERN, Tokenizer, tokenizerConfigJson } from "../tokenizer/mod.ts";
import { benchCase } from "./harness.ts";

const { bytes } = await loadDefaultCorpus();
const text = new TextDecoder().decode(bytes);
const mb = bytes.length / 1e6;
console.log(`tokenizer: ${mb.toFixed(2)} MB of ${DEFAULT_CORPUS.path}`);

/** One library's way to do a case's work on `text`; returns ids for the check. */
interface Lib {
  lib: string;
  run: () => ArrayLike<number> | void;
}

/** One group: each library timed by the harness (at least 1 s), ids checked exactly. */
async function group(name: string, libs: Lib[], n: number): Promise<void> {
  await benchCase({
    group: name,
    work: { mb },
    n,
    minMs: 1000,
    tol: 0,
    impls: libs.map((l) => {
      let last: ArrayLike<number> | void;
      return {
        lib: l.lib,
        prepare: () =>
          Promise.resolve({
            run: () => {
              last = l.run();
              return Promise.resolve();
            },
            result: () => Promise.resolve(Array.from(last ?? [])),
          }),
      };
    }),
  });
}

// ---- BPE 2048 trained on the text ----
const bpe = Tokenizer.train(text, { vocabSize: 2048, specialTokens: ["<|endoftext|>"] });
const bpeJson = bpe.toHfJson();
const nTokens = bpe.encode(text, { allowedSpecial: "none" }).length;
console.log(
  `  BPE 2048 on its training text: ${nTokens} tokens, ${
    (bytes.length / nTokens).toFixed(3)
  } bytes per token`,
);
await group("encode BPE 2048 (Kimi K2 pattern), cold cache", [{
  lib: "moongrad",
  run: () => Tokenizer.fromHfJson(bpeJson).encode(text, { allowedSpecial: "none" }),
}], 5);
await group("encode BPE 2048 (Kimi K2 pattern), warm cache", [{
  lib: "moongrad",
  run: () => bpe.encode(text, { allowedSpecial: "none" }),
}], 5);

// ---- o200k_base: moongrad vs js-tiktoken vs HF tokenizers (JS) ----
const rankLines: string[] = [];
for (const line of o200k.bpe_ranks.split("\n")) {
  const [_, offset, ...tokens] = line.split(" ");
  tokens.forEach((t, i) => rankLines.push(`${t} ${Number(offset) + i}`));
}
const mine = Tokenizer.fromTiktokenText(rankLines.join("\n"), { pattern: GPT4O_PATTERN });
const tiktoken = new Tiktoken(o200k);
const hf = new HfTokenizer(JSON.parse(mine.toHfJson()), JSON.parse(tokenizerConfigJson(mine)));
await group("encode o200k_base (GPT-4o pattern)", [
  { lib: "moongrad", run: () => mine.encode(text) },
  { lib: "js-tiktoken", run: () => tiktoken.encode(text, [], []) },
  { lib: "hf-tokenizers-js", run: () => hf.encode(text, { add_special_tokens: false }).ids },
], 3);

// ---- training ----
await group("train BPE 4096 (count words + 3839 merges)", [{
  lib: "moongrad",
  run: () => void Tokenizer.train(text, { vocabSize: 4096 }),
}], 3);
