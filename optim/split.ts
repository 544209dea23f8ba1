/**
 * Moonlight's parameter routing and a combined optimizer: Muon for the hidden weight
 * matrices, AdamW for everything else (embeddings, the LM head, norm gains, biases).
 */
import { MoongradError } from "../core/errors.ts";
import type { Module } from "../nn/module.ts";
import { AdamW, type AdamWOptions } from "./adamw.ts";
import { Muon, type MuonOptions } from "./muon.ts";
import {
  type CommonOptions,
  type NamedParam,
  namedParams,
  type OptimizerStateDict,
  type ParamSource,
} from "./optimizer.ts";

/**
 * The two halves of a model's parameters.
 *
 * @example Inspect how a model is split
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"), { seed: 0 });
 * const split: mg.optim.MoonlightSplit = mg.optim.splitParamsMoonlight(lm);
 * console.log(split.adamw.map(([n]) => n).slice(0, 2)); // ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"]
 * ```
 */
export interface MoonlightSplit {
  /** Hidden weight matrices [A, B] and stacked expert weights [E, A, B]. */
  muon: NamedParam[];
  /** Embeddings, the LM head, norm gains, biases and any other non-matrix parameter. */
  adamw: NamedParam[];
}

/**
 * Why a parameter goes to AdamW under the Moonlight rule, or null when it goes to Muon.
 *
 * @example Why a parameter goes to AdamW
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.optim.adamwReason("model.embed_tokens.weight", [256, 128])); // "embedding"
 * console.log(mg.optim.adamwReason("model.norm.weight", [128])); // "not a matrix (gain, bias or scalar)"
 * console.log(mg.optim.adamwReason("model.layers.0.mlp.up_proj.weight", [384, 128])); // null: Muon
 * ```
 */
export function adamwReason(name: string, shape: readonly number[]): string | null {
  const parts = name.split(".");
  const leaf = parts[parts.length - 1];
  if (shape.length < 2) return "not a matrix (gain, bias or scalar)";
  if (name.includes("embed_tokens") || name.includes("embed")) return "embedding";
  if (name.includes("lm_head")) return "LM head";
  if (leaf === "bias" || leaf.endsWith("_bias")) return "bias";
  if (parts.some((p) => p.includes("norm"))) return "norm parameter";
  if (shape.length > 3) return `rank ${shape.length} (Muon takes [A, B] or [E, A, B])`;
  return null;
}

/**
 * Splits parameters the Moonlight way: 2-D hidden matrices (attention projections, MLP and
 * expert weights, the router gate) and stacked 3-D expert weights go to Muon; names
 * containing `embed_tokens` / `embed` or `lm_head`, norm parameters (`*norm*`), biases and
 * every parameter of rank < 2 (or > 3) go to AdamW. Order follows `namedParameters()`.
 *
 * @example Split a model's parameters
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"), { seed: 0 });
 * const { muon, adamw } = mg.optim.splitParamsMoonlight(lm);
 * console.log(muon.every(([, t]) => t.rank >= 2), adamw.length > 0); // true true
 * ```
 */
export function splitParamsMoonlight(params: ParamSource): MoonlightSplit {
  const out: MoonlightSplit = { muon: [], adamw: [] };
  for (const np of namedParams("splitParamsMoonlight", params, "")) {
    (adamwReason(np[0], np[1].shape) === null ? out.muon : out.adamw).push(np);
  }
  return out;
}

/**
 * Options of `MuonWithAdamW`: each half's hyper-parameters (each with its own lr).
 *
 * @example Separate learning rates for the two halves
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.MuonWithAdamWOptions = {
 *   muon: { lr: 0.02, momentum: 0.95 },
 *   adamw: { lr: 3e-4, betas: [0.9, 0.95] },
 *   checkFinite: false,
 * };
 * ```
 */
export interface MuonWithAdamWOptions extends CommonOptions {
  /** Muon's options (lr required). */
  muon: Partial<MuonOptions> & Pick<MuonOptions, "lr">;
  /** AdamW's options (lr required). */
  adamw: Partial<AdamWOptions> & Pick<AdamWOptions, "lr">;
}

/**
 * A snapshot of both halves of `MuonWithAdamW`.
 *
 * @example Checkpoint both halves
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"), { seed: 0 });
 * const opt = new mg.optim.MuonWithAdamW(lm, { muon: { lr: 0.02 }, adamw: { lr: 3e-4 } });
 * const sd: mg.optim.MuonWithAdamWStateDict = opt.stateDict();
 * console.log(sd.muon.kind, sd.adamw.kind); // Muon AdamW
 * opt.loadStateDict(sd);
 * mg.optim.disposeStateDict(sd.muon);
 * mg.optim.disposeStateDict(sd.adamw);
 * ```
 */
export interface MuonWithAdamWStateDict {
  /** Muon's state. */
  muon: OptimizerStateDict;
  /** AdamW's state. */
  adamw: OptimizerStateDict;
}

/**
 * Muon for the hidden matrices and AdamW for the rest (Moonlight / Kimi K2), as one
 * optimizer: `step()`, `zeroGrad()`, `stateDict()`, `loadStateDict()` drive both.
 *
 * @example Train a whole model with Muon and AdamW
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const lm = new mg.nn.KimiLM(config, { seed: 0 });
 * const opt = new mg.optim.MuonWithAdamW(lm, { muon: { lr: 0.02 }, adamw: { lr: 3e-4 } });
 * const batch = [[1, 5, 9, 2, 7, 3, 8, 4], [6, 2, 2, 9, 1, 0, 5, 3]]; // token ids [2, 8]
 * const stats = new mg.nn.StepStats();
 * mg.scope(() => lm.loss(batch, { labels: batch }, { stats }).backward()); // HF-style: shifted inside
 * await opt.step();
 * opt.zeroGrad();
 * stats.dispose();
 * ```
 */
export class MuonWithAdamW {
  /** The Muon half. */
  readonly muon: Muon;
  /** The AdamW half. */
  readonly adamw: AdamW;
  /** How the parameters were split. */
  readonly split: MoonlightSplit;

  /** Splits `params` (a Module or named tensors, or an explicit split) and builds both. */
  constructor(
    params: Module | readonly NamedParam[] | MoonlightSplit,
    options: MuonWithAdamWOptions,
  ) {
    if (!options || !options.muon || !options.adamw) {
      throw new MoongradError(
        "MuonWithAdamW",
        "options need { muon: { lr, ... }, adamw: { lr, ... } }",
      );
    }
    this.split = isSplit(params) ? params : splitParamsMoonlight(params);
    const { checkFinite } = options;
    this.muon = new Muon(this.split.muon, { ...options.muon, checkFinite });
    this.adamw = new AdamW(this.split.adamw, { ...options.adamw, checkFinite });
  }

  /** Steps both halves (the promise matters only with checkFinite). */
  async step(): Promise<void> {
    if (this.muon.checkFinite) {
      // Check both halves before updating either.
      await Promise.all([this.muon.assertFinite(), this.adamw.assertFinite()]);
    }
    this.muon.applyStep();
    this.adamw.applyStep();
  }

  /** Frees every gradient. */
  zeroGrad(): void {
    this.muon.zeroGrad();
    this.adamw.zeroGrad();
  }

  /** Snapshots both halves (the tensors are copies the caller disposes). */
  stateDict(): MuonWithAdamWStateDict {
    return { muon: this.muon.stateDict(), adamw: this.adamw.stateDict() };
  }

  /** Restores both halves (each checked before anything changes). */
  loadStateDict(sd: MuonWithAdamWStateDict): void {
    if (!sd || !sd.muon || !sd.adamw) {
      throw new MoongradError(
        "MuonWithAdamW.loadStateDict",
        "expected { muon, adamw } state dicts",
      );
    }
    this.muon.loadStateDict(sd.muon);
    this.adamw.loadStateDict(sd.adamw);
  }

  /** Frees both halves' state. */
  dispose(): void {
    this.muon.dispose();
    this.adamw.dispose();
  }
}

function isSplit(x: unknown): x is MoonlightSplit {
  return x !== null && typeof x === "object" && "muon" in x && "adamw" in x &&
    Array.isArray((x as MoonlightSplit).muon);
}
