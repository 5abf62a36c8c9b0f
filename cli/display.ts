/**
 * What a long command shows on a terminal: state lines that scroll, and one progress line kept below
 * them. A state line first clears the progress line, then the progress line is drawn again, so the two
 * never mix on one line. Off when stdout is not a terminal (CGM_PROGRESS=1 forces it on, =0 off).
 */
import { formatBytes } from "./output.ts";

export function progressWanted(json: boolean | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (json) return false;
  if (env.CGM_PROGRESS === "1") return true;
  if (env.CGM_PROGRESS === "0") return false;
  return process.stdout.isTTY === true;
}

export class TerminalDisplay {
  readonly #enabled: boolean;
  readonly #write: (s: string) => void;
  #progress = "";

  constructor(enabled: boolean, write: (s: string) => void = (s) => void process.stdout.write(s)) {
    this.#enabled = enabled;
    this.#write = write;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  /** A line that stays (a state entered, a message). */
  line(text: string): void {
    if (!this.#enabled) return;
    this.#write(`\r\x1b[K${text}\n${this.#progress}`);
  }

  /** Replaces the progress line. */
  progress(text: string): void {
    if (!this.#enabled) return;
    this.#progress = text;
    this.#write(`\r\x1b[K${text}`);
  }

  /** Removes the progress line (before the final summary is printed). */
  clear(): void {
    if (!this.#enabled || this.#progress === "") return;
    this.#progress = "";
    this.#write("\r\x1b[K");
  }
}

/** The transfer progress line: blocks, bytes, rate, ETA. */
export function transferProgressText(
  p: { blocksDone: number; blocksTotal: number; bytesDone: number },
  startedMs: number,
  now: number = Date.now(),
): string {
  const seconds = Math.max(0.001, (now - startedMs) / 1000);
  const rate = p.bytesDone / seconds;
  const eta =
    p.blocksTotal > 0 && p.blocksDone > 0 && p.blocksDone < p.blocksTotal
      ? ` ETA ${Math.ceil(((p.blocksTotal - p.blocksDone) * seconds) / p.blocksDone)} s`
      : "";
  return `transfer: ${p.blocksDone}${p.blocksTotal ? `/${p.blocksTotal}` : ""} blocks read, ${formatBytes(p.bytesDone)}, ${formatBytes(rate)}/s${eta}`;
}
