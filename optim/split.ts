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

/** The two halves of a model's parameters. */
export interface MoonlightSplit {
  /** Hidden weight matrices [A, B] and stacked expert weights [E, A, B]. */
  muon: NamedParam[];
  /** Embeddings, the LM head, norm gains, biases and any other non-matrix parameter. */
  adamw: NamedParam[];
}

/** Why a parameter goes to AdamW under the Moonlight rule, or null when it goes to Muon. */
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
 */
export function splitParamsMoonlight(params: ParamSource): MoonlightSplit {
  const out: MoonlightSplit = { muon: [], adamw: [] };
  for (const np of namedParams("splitParamsMoonlight", params, "")) {
    (adamwReason(np[0], np[1].shape) === null ? out.muon : out.adamw).push(np);
  }
  return out;
}

/** Options of `MuonWithAdamW`: each half's hyper-parameters (each with its own lr). */
export interface MuonWithAdamWOptions extends CommonOptions {
  /** Muon's options (lr required). */
  muon: Partial<MuonOptions> & Pick<MuonOptions, "lr">;
  /** AdamW's options (lr required). */
  adamw: Partial<AdamWOptions> & Pick<AdamWOptions, "lr">;
}

/** A snapshot of both halves of `MuonWithAdamW`. */
export interface MuonWithAdamWStateDict {
  /** Muon's state. */
  muon: OptimizerStateDict;
  /** AdamW's state. */
  adamw: OptimizerStateDict;
}

/**
 * Muon for the hidden matrices and AdamW for the rest (Moonlight / Kimi K2), as one
 * optimizer: `step()`, `zeroGrad()`, `stateDict()`, `loadStateDict()` drive both.
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
