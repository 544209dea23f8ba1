/**
 * `deno task corpus --commit REV --version N`: writes `data/moongrad-src-vN.txt`, a snapshot of
 * this repository's own TypeScript and Markdown files at commit REV (read from git, so the
 * working tree does not matter and the same REV always gives the same bytes), behind a header
 * that says what the file is and under which terms it is distributed. Prints its size and
 * SHA-256, which `DEFAULT_CORPUS` in cli/data.ts pins when the snapshot becomes the default.
 * An existing file is never overwritten: a new snapshot is a new version.
 */
import { type FlagSpec, helpText, intFlag, parseFlags, stringFlag } from "./args.ts";
import { sha256Hex } from "./data.ts";
import { CliError, runMain } from "./errors.ts";

const FLAGS: Record<string, FlagSpec> = {
  commit: { type: "string", arg: "REV", help: "the commit to snapshot (required)" },
  version: { type: "string", arg: "N", help: "the snapshot's version number (required)" },
  out: {
    type: "string",
    arg: "FILE",
    default: "data/moongrad-src-v<N>.txt",
    help: "where to write it",
  },
  help: { type: "boolean", short: "h", help: "show this help" },
};

/** Directories whose files are not part of the text (build output, fixtures, results). */
const SKIP = /(^|\/)(\.[^/]*|node_modules|dist|runs|coverage|results|fixtures)\//;

/** The repository this module belongs to. */
const ROOT = new URL("../", import.meta.url).pathname;

async function git(args: string[]): Promise<Uint8Array> {
  const out = await new Deno.Command("git", { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new CliError(`git ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return out.stdout;
}

/** The snapshot's text: header, then `// file: PATH` + contents for each file in path order. */
export async function snapshot(
  commit: string,
  version: number,
): Promise<{ text: Uint8Array; files: number }> {
  const full = new TextDecoder().decode(await git(["rev-parse", "--verify", `${commit}^{commit}`]))
    .trim();
  const date = new TextDecoder().decode(await git(["log", "-1", "--format=%cs", full])).trim();
  const names = new TextDecoder().decode(await git(["ls-tree", "-r", "-z", "--name-only", full]))
    .split("\0")
    .filter((p) => /\.(ts|md)$/.test(p) && !SKIP.test(p))
    .sort();
  const dec = new TextDecoder("utf-8", { fatal: true });
  const body: string[] = [];
  for (const p of names) {
    const bytes = await git(["cat-file", "blob", `${full}:${p}`]);
    body.push(`\n// file: ${p}\n${dec.decode(bytes)}`);
  }
  const header = [
    `moongrad-src-v${version}: the default training text of moongrad (\`deno task train\`,`,
    "`deno task tokenizer`).",
    "",
    `What it is: the ${names.length} TypeScript (*.ts) and Markdown (*.md) files of the moongrad`,
    "repository at commit",
    `${full} (${date}),`,
    "in path order, each after a line `// file: PATH` (test fixtures and generated",
    "results left out). The trainer reads this whole file, header included, as UTF-8",
    "bytes.",
    "",
    "Licence: moongrad's own source code and documentation, written for the project and",
    "distributed with it under the same terms as the rest of the repository. Apart from the",
    "short technical strings it cites (tokenizer split patterns, configuration key names,",
    "model names), it contains no third-party text.",
    "",
    "Fixed: this file never changes. cli/data.ts pins its SHA-256, which every run records",
    "(run.json, trainer_state.json); a newer snapshot is a new file with a new version.",
    `Made by: deno task corpus --commit ${full.slice(0, 12)} --version ${version}`,
    "(byte-identical output).",
    "=".repeat(78),
    "",
  ].join("\n");
  return { text: new TextEncoder().encode(header + body.join("")), files: names.length };
}

async function main(): Promise<void> {
  const { flags } = parseFlags(Deno.args, FLAGS);
  if (flags.help) {
    console.log(
      helpText(
        "deno task corpus --commit REV --version N",
        "Writes a versioned snapshot of this repository's *.ts and *.md files at a commit.",
        FLAGS,
      ),
    );
    return;
  }
  const commit = stringFlag(flags, "commit");
  const version = intFlag(flags, "version", 0, 1);
  if (!commit || version === 0) throw new CliError("--commit REV and --version N are required");
  const out = stringFlag(flags, "out") ?? `data/moongrad-src-v${version}.txt`;
  const { text, files } = await snapshot(commit, version);
  try {
    await Deno.writeFile(out, text, { createNew: true });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      const old = await Deno.readFile(out);
      if ((await sha256Hex(old)) === (await sha256Hex(text))) {
        console.log(`${out} already holds this snapshot`);
      } else {
        throw new CliError(`${out} exists with other contents; a new snapshot needs a new version`);
      }
    } else throw e;
  }
  console.log(`${out}: ${files} files, ${text.length} bytes, sha256 ${await sha256Hex(text)}`);
}

if (import.meta.main) await runMain("corpus", main);
