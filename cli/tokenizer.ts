/**
 * `deno task tokenizer --train FILE --vocab N --out DIR`: trains a byte-level BPE tokenizer
 * on a text file (default: the trainer's default corpus, `data/moongrad-src-v1.txt`, a fixed
 * snapshot of this repository's *.ts and *.md files) and writes `DIR/tokenizer.json`
 * (+ `tokenizer_config.json`), then reports the compression (bytes per token) and encoding
 * speed on the training text.
 * `deno task train --tokenizer DIR` trains a model with it.
 */
import { NAMED_PATTERNS, Tokenizer } from "../tokenizer/mod.ts";
import { type FlagSpec, helpText, intFlag, parseFlags, stringFlag } from "./args.ts";
import { DEFAULT_CORPUS, loadDefaultCorpus } from "./data.ts";
import { CliError, runMain } from "./errors.ts";

/** The flags of `deno task tokenizer`. */
export const TOKENIZER_FLAGS: Record<string, FlagSpec> = {
  train: {
    type: "string",
    arg: "FILE",
    default: `${DEFAULT_CORPUS.path}, the trainer's default corpus`,
    help: "text to train on",
  },
  vocab: {
    type: "string",
    arg: "N",
    default: "2048",
    help: "vocabulary size (256 bytes + merges + special tokens)",
  },
  out: { type: "string", arg: "DIR", help: "directory to write tokenizer.json to (required)" },
  pattern: {
    type: "string",
    arg: "NAME|REGEX",
    default: "kimi",
    help: `split pattern: ${Object.keys(NAMED_PATTERNS).join(" | ")} | a regex (Oniguruma syntax)`,
  },
  special: {
    type: "string",
    arg: "LIST",
    default: "<|endoftext|>",
    help: "comma-separated special tokens ('' for none)",
  },
  "min-frequency": {
    type: "string",
    arg: "N",
    default: "2",
    help: "stop merging when the best pair occurs fewer times",
  },
  help: { type: "boolean", short: "h", help: "show this help" },
};

async function readText(path: string): Promise<string> {
  try {
    return new TextDecoder().decode(await Deno.readFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliError(`--train ${path}: no such file`);
    throw new CliError(`--train ${path}: cannot read it (${(e as Error).message})`);
  }
}

async function main(): Promise<void> {
  const { flags } = parseFlags(Deno.args, TOKENIZER_FLAGS);
  if (flags.help) {
    console.log(helpText(
      "deno task tokenizer [--train FILE] [--vocab N] --out DIR [options]",
      "Trains a byte-level BPE tokenizer (GPT-style split pattern, 256 byte tokens, so any\n" +
        "input encodes) and writes a Hugging Face tokenizer.json.",
      TOKENIZER_FLAGS,
    ));
    return;
  }
  const out = stringFlag(flags, "out");
  if (!out) throw new CliError("missing --out DIR (see --help)");
  const vocabSize = intFlag(flags, "vocab", 2048, 257);
  const minFrequency = intFlag(flags, "min-frequency", 2, 1);
  const pat = stringFlag(flags, "pattern") ?? "kimi";
  const pattern = NAMED_PATTERNS[pat] ?? pat;
  const special = flags.special === undefined ? "<|endoftext|>" : String(flags.special);
  const specialTokens = special.split(",").filter((s) => s.length > 0);
  const file = stringFlag(flags, "train");
  let text: string, source: string;
  if (file) {
    text = await readText(file);
    source = file;
  } else {
    text = new TextDecoder().decode((await loadDefaultCorpus()).bytes);
    source = `${DEFAULT_CORPUS.path} (${DEFAULT_CORPUS.name})`;
  }
  const bytes = new TextEncoder().encode(text).length;
  console.log(`training on ${source}: ${(bytes / 1e6).toFixed(2)} MB`);
  let tok: Tokenizer;
  const t0 = performance.now();
  try {
    tok = Tokenizer.train(text, { vocabSize, pattern, specialTokens, minFrequency });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const trainS = (performance.now() - t0) / 1000;
  console.log(`trained ${tok.description} in ${trainS.toFixed(1)} s`);
  if (tok.vocabSize < vocabSize) {
    console.log(`(no pair occurs ${minFrequency} times any more: stopped below --vocab)`);
  }
  const fresh = Tokenizer.fromHfJson(tok.toHfJson()); // a cold word cache, as a new user sees it
  const t1 = performance.now();
  const ids = fresh.encode(text, { allowedSpecial: "none" });
  const encS = (performance.now() - t1) / 1000;
  console.log(
    `on the training text: ${(bytes / ids.length).toFixed(3)} bytes per token ` +
      `(${ids.length.toLocaleString("en-US")} tokens), encoding ${
        (bytes / 1e6 / encS).toFixed(1)
      } MB/s`,
  );
  await tok.save(out);
  console.log(`wrote ${out}/tokenizer.json; train with: deno task train --tokenizer ${out}`);
}

if (import.meta.main) await runMain("tokenizer", main);
