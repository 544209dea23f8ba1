/**
 * Flag parsing shared by the commands: node:util parseArgs in strict mode, every unknown
 * flag or malformed number turned into a one-line CliError.
 */
import { parseArgs } from "node:util";
import { CliError } from "./errors.ts";

/** A flag: its type, default, value name and help line. */
export interface FlagSpec {
  /** "string" flags take a value; "boolean" flags do not. */
  type: "string" | "boolean";
  /** One-letter alias. */
  short?: string;
  /** Default shown in --help (parsing leaves absent flags undefined). */
  default?: string;
  /** Value placeholder in --help, e.g. "N". */
  arg?: string;
  /** Help text. */
  help: string;
}

/** Parsed flags: strings for valued flags, booleans for switches; absent ones undefined. */
export type Flags = Record<string, string | boolean | undefined>;

/**
 * Parses `argv` against `specs`; unknown flags, missing values and stray positionals (unless
 * `positionals` allows them) are CliErrors.
 */
export function parseFlags(
  argv: string[],
  specs: Record<string, FlagSpec>,
  positionals = 0,
): { flags: Flags; positionals: string[] } {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, s] of Object.entries(specs)) {
    options[name] = s.short ? { type: s.type, short: s.short } : { type: s.type };
  }
  // parseArgs reads "--lr -1" as two flags; join a valued flag with a following negative
  // number so that the number's own check can report it.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : "";
    if (specs[name]?.type === "string" && /^-[\d.]/.test(argv[i + 1] ?? "")) {
      args.push(`${argv[i]}=${argv[++i]}`);
    } else args.push(argv[i]);
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (e) {
    throw new CliError(parseArgsMessage(e as Error));
  }
  if (parsed.positionals.length > positionals) {
    const extra = parsed.positionals[positionals];
    throw new CliError(`unexpected argument "${extra}" (see --help)`);
  }
  return { flags: parsed.values as Flags, positionals: parsed.positionals };
}

function parseArgsMessage(e: Error): string {
  const code = (e as Error & { code?: string }).code;
  const m = e.message;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const flag = /'([^']+)'/.exec(m)?.[1] ?? m;
    return `unknown option ${flag} (see --help)`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const flag = /--[\w-]+/.exec(m)?.[0];
    return flag ? `option ${flag} needs a value (see --help)` : firstLine(m);
  }
  return firstLine(m);
}

function firstLine(s: string): string {
  return s.split("\n")[0];
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** A finite number from flag `name`, or `fallback` when absent; CliError when malformed. */
export function numberFlag(
  flags: Flags,
  name: string,
  fallback: number,
  check: { min?: number; max?: number; exclusiveMin?: boolean } = {},
): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const s = String(raw).trim();
  const v = NUMBER.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(v)) throw new CliError(`--${name} must be a number, got "${raw}"`);
  if (check.min !== undefined) {
    const bad = check.exclusiveMin ? v <= check.min : v < check.min;
    if (bad) {
      throw new CliError(
        `--${name} must be ${check.exclusiveMin ? ">" : ">="} ${check.min}, got ${raw}`,
      );
    }
  }
  if (check.max !== undefined && v > check.max) {
    throw new CliError(`--${name} must be <= ${check.max}, got ${raw}`);
  }
  return v;
}

/** An integer from flag `name` (>= `min`, default 1), or `fallback` when absent. */
export function intFlag(flags: Flags, name: string, fallback: number, min = 1): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const s = String(raw).trim();
  const v = /^[+-]?\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(v)) throw new CliError(`--${name} must be an integer, got "${raw}"`);
  if (v < min) throw new CliError(`--${name} must be an integer >= ${min}, got ${raw}`);
  return v;
}

/** A string flag restricted to `choices`, or `fallback` when absent. */
export function choiceFlag<T extends string>(
  flags: Flags,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  if (!choices.includes(raw as T)) {
    throw new CliError(`--${name} must be one of ${choices.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

/** A non-empty string flag, or undefined when absent. */
export function stringFlag(flags: Flags, name: string): string | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || raw.length === 0) {
    throw new CliError(`--${name} needs a non-empty value`);
  }
  return raw;
}

/** The --help text: usage, description, then one aligned line per flag with its default. */
export function helpText(
  usage: string,
  description: string,
  specs: Record<string, FlagSpec>,
): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const left = `${s.short ? `-${s.short}, ` : "    "}--${name}${s.arg ? ` ${s.arg}` : ""}`;
    const def = s.default !== undefined ? ` (default: ${s.default})` : "";
    return [left, `${s.help}${def}`] as const;
  });
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  return [
    `Usage: ${usage}`,
    "",
    description,
    "",
    "Options:",
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`),
  ].join("\n");
}
