/**
 * Training progress on the terminal: a live one-line bar when stdout is a TTY, plain log
 * lines (every few steps) otherwise, plus permanent lines for evaluations and checkpoints.
 */

/** What one progress update shows. */
export interface ProgressInfo {
  /** Completed steps. */
  step: number;
  /** Total steps. */
  total: number;
  /** Training loss of the step. */
  loss: number;
  /** Smoothed tokens per second. */
  tokensPerSecond: number;
  /** Max attention logit of the step (over layers and heads). */
  maxLogit: number;
  /** Heads clipped in the step. */
  clipped: number;
  /** Seconds left (estimate). */
  etaSeconds: number;
  /** Last validation loss, if any. */
  valLoss?: number;
}

/** Formats seconds as "1m05s" / "42s". */
export function fmtEta(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const r = Math.round(s);
  return r >= 60 ? `${Math.floor(r / 60)}m${String(r % 60).padStart(2, "0")}s` : `${r}s`;
}

const enc = new TextEncoder();

/** The progress display. */
export class Progress {
  /** Whether stdout is a terminal (live bar). */
  readonly tty: boolean;
  readonly #every: number;
  #barShown = false;

  /** `total` steps; plain mode prints every ~total/40 steps (and the first and last). */
  constructor(total: number, tty = Deno.stdout.isTerminal()) {
    this.tty = tty;
    this.#every = Math.max(1, Math.ceil(total / 40));
  }

  #write(s: string): void {
    Deno.stdout.writeSync(enc.encode(s));
  }

  /** A permanent line (above the bar on a TTY). */
  line(text: string): void {
    if (this.tty && this.#barShown) this.#write("\r\x1b[2K");
    this.#write(text + "\n");
    this.#barShown = false;
  }

  /** Updates the bar (TTY) or prints a log line every few steps (plain). */
  update(p: ProgressInfo): void {
    const stats = (short: boolean) =>
      [
        `loss ${p.loss.toFixed(3)}${p.valLoss !== undefined ? ` val ${p.valLoss.toFixed(3)}` : ""}`,
        `${p.tokensPerSecond.toFixed(0)} tok/s`,
        `${short ? "logit" : "max logit"} ${p.maxLogit.toFixed(1)}`,
        `${short ? "clip" : "clipped"} ${p.clipped}`,
        `ETA ${fmtEta(p.etaSeconds)}`,
      ].join(" | ");
    const width = String(p.total).length;
    const count = `${String(p.step).padStart(width)}/${p.total}`;
    if (this.tty) {
      const cols = (() => {
        try {
          return Deno.consoleSize().columns;
        } catch {
          return 100;
        }
      })();
      const full = stats(false);
      const st = full.length + count.length + 12 > cols ? stats(true) : full;
      const barWidth = Math.max(5, Math.min(30, cols - st.length - count.length - 5));
      const filled = Math.round((p.step / p.total) * barWidth);
      const bar = `[${"█".repeat(filled)}${"░".repeat(barWidth - filled)}]`;
      let text = `${bar} ${count} ${st}`;
      if (text.length > cols - 1) text = text.slice(0, cols - 1);
      this.#write(`\r\x1b[2K${text}`);
      this.#barShown = true;
    } else if (p.step === 1 || p.step === p.total || p.step % this.#every === 0) {
      this.#write(`step ${count} ${stats(false)}\n`);
    }
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.tty && this.#barShown) this.#write("\n");
    this.#barShown = false;
  }
}
