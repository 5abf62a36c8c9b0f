/** A one-line progress display (blocks, bytes, rate, ETA) for a terminal; silent when not a TTY. */
import { formatBytes } from "./output.ts";

export class ProgressLine {
  readonly #enabled: boolean;
  readonly #label: string;
  readonly #started = Date.now();
  #last = 0;

  constructor(label: string, enabled: boolean = process.stdout.isTTY === true) {
    this.#label = label;
    this.#enabled = enabled;
  }

  update(done: number, total: number | undefined, bytes: number): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (now - this.#last < 200) return;
    this.#last = now;
    const seconds = (now - this.#started) / 1000;
    const rate = seconds > 0 ? bytes / seconds : 0;
    const eta =
      total && done > 0 && done < total ? ` ETA ${Math.ceil(((total - done) * seconds) / done)} s` : "";
    process.stdout.write(
      `\r${this.#label}: ${done}${total ? `/~${total}` : ""} blocks, ${formatBytes(bytes)}, ${formatBytes(rate)}/s${eta}\x1b[K`,
    );
  }

  done(message: string): void {
    if (this.#enabled) process.stdout.write(`\r${message}\x1b[K\n`);
  }
}
