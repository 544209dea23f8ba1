/**
 * `deno task sample --run RUN_DIR --prompt "…"`: loads a trained checkpoint and its tokenizer
 * (tokenizer.json beside the model; bytes when there is none), encodes the prompt and
 * generates with the latent KV cache, streaming each token's text to stdout as it is chosen
 * (bytes of a character split across tokens are held until the character is complete).
 * A trainer checkpoint is verified first (SHA-256 and step of its files, as `--resume` does).
 */
import * as mg from "../mod.ts";
import { configFromHf } from "../nn/hf_config.ts";
import type { KimiConfig } from "../nn/config.ts";
import { KimiLM } from "../nn/model.ts";
import { loadInto } from "../io/mod.ts";
import { type FlagSpec, helpText, intFlag, numberFlag, parseFlags, stringFlag } from "./args.ts";
import { CHECKPOINT, readTrainerState, STATE_FILE, verifyCheckpoint } from "./checkpoint.ts";
import { loadTokenizer } from "./data.ts";
import { CliError, runMain } from "./errors.ts";

/** The flags of `deno task sample`. */
export const SAMPLE_FLAGS: Record<string, FlagSpec> = {
  run: {
    type: "string",
    arg: "DIR",
    help: "run directory (or its checkpoint/ directory) to load (required)",
  },
  prompt: { type: "string", arg: "TEXT", default: "\\n", help: "text to continue" },
  "max-tokens": {
    type: "string",
    arg: "N",
    default: "200",
    help: "tokens to generate",
  },
  temperature: {
    type: "string",
    arg: "X",
    default: "0.8",
    help: "softmax temperature (0 = greedy)",
  },
  "top-k": { type: "string", arg: "N", default: "40", help: "sample among the k likeliest tokens" },
  seed: { type: "string", arg: "N", default: "0", help: "seed of the sampler" },
  help: { type: "boolean", short: "h", help: "show this help" },
};

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The checkpoint directory holding model.safetensors + config.json for `dir`. */
async function modelDir(dir: string): Promise<string> {
  const d = dir.replace(/\/+$/, "");
  if (!(await exists(d))) throw new CliError(`--run ${d}: no such directory`);
  for (const c of [d, `${d}/${CHECKPOINT}`, `${d}/.${CHECKPOINT}-old`]) {
    if (await exists(`${c}/model.safetensors`) && await exists(`${c}/config.json`)) return c;
  }
  throw new CliError(
    `--run ${d}: no checkpoint there (expected ${d}/${CHECKPOINT}/model.safetensors)`,
  );
}

async function main(): Promise<void> {
  const { flags } = parseFlags(Deno.args, SAMPLE_FLAGS);
  if (flags.help) {
    console.log(helpText(
      'deno task sample --run RUN_DIR [--prompt "TEXT"] [options]',
      "Generates text from a trained checkpoint with the latent KV cache, streaming each\n" +
        "token as it is sampled (with the checkpoint's tokenizer.json, or bytes).",
      SAMPLE_FLAGS,
    ));
    return;
  }
  const run = stringFlag(flags, "run");
  if (!run) throw new CliError("missing --run RUN_DIR (see --help)");
  const prompt = flags.prompt === undefined ? "\n" : String(flags.prompt);
  if (prompt.length === 0) throw new CliError("--prompt must not be empty");
  const maxTokens = intFlag(flags, "max-tokens", 200, 1);
  const temperature = numberFlag(flags, "temperature", 0.8, { min: 0 });
  const topK = intFlag(flags, "top-k", 40, 1);
  const seed = intFlag(flags, "seed", 0, 0);
  const dir = await modelDir(run);
  if (await exists(`${dir}/${STATE_FILE}`)) {
    // A trainer checkpoint: its files must be the ones it saved (hashes and step).
    await verifyCheckpoint(dir, await readTrainerState(dir), { skip: ["optimizer.safetensors"] });
  }
  let config: KimiConfig;
  try {
    config = configFromHf(JSON.parse(await Deno.readTextFile(`${dir}/config.json`)));
  } catch (e) {
    throw new CliError(`${dir}/config.json is not a usable model config: ${(e as Error).message}`);
  }
  const tok = await loadTokenizer(await exists(`${dir}/tokenizer.json`) ? dir : "bytes");
  if (tok.vocabSize !== config.vocab_size) {
    throw new CliError(
      `${dir}: the tokenizer has ${tok.vocabSize} tokens but the model's vocab_size is ${config.vocab_size}`,
    );
  }
  const promptIds = tok.encode(prompt);
  const limit = config.max_position_embeddings;
  if (promptIds.length + maxTokens > limit) {
    throw new CliError(
      `prompt (${promptIds.length} tokens) + --max-tokens ${maxTokens} exceeds the model's ${limit} positions`,
    );
  }
  await mg.init();
  const model = new KimiLM(config, { seed: 0 });
  try {
    await loadInto(model, `${dir}/model.safetensors`);
  } catch (e) {
    throw new CliError(
      `${dir}/model.safetensors does not match its config.json: ${(e as Error).message}`,
    );
  }
  model.eval();
  const out = Deno.stdout;
  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8");
  out.writeSync(enc.encode(prompt));
  const ids = mg.tensor(Int32Array.from(promptIds), { shape: [1, promptIds.length], dtype: "i32" });
  const t0 = performance.now();
  let n = 0;
  await model.generate(ids, {
    maxNewTokens: maxTokens,
    temperature,
    topK,
    seed,
    onToken: (tokens) => {
      n++;
      let bytes: Uint8Array;
      try {
        bytes = tok.decodeBytes([tokens[0]]);
      } catch {
        bytes = enc.encode("\ufffd"); // an id the tokenizer leaves unused
      }
      const text = dec.decode(bytes, { stream: true });
      if (text) out.writeSync(enc.encode(text));
    },
  });
  const tail = dec.decode();
  if (tail) out.writeSync(enc.encode(tail));
  ids.dispose();
  const secs = (performance.now() - t0) / 1000;
  console.error(
    `\n[${n} tokens in ${secs.toFixed(1)} s, ${(n / secs).toFixed(1)} tokens/s; ${dir}]`,
  );
  model.dispose();
}

if (import.meta.main) await runMain("sample", main);
