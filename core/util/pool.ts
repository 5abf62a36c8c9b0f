/** Runs async tasks with at most `limit` in flight; rejects with the first failure. */
export class TaskPool {
  readonly #limit: number;
  readonly #running = new Set<Promise<void>>();
  #error: unknown;
  #failed = false;

  constructor(limit: number) {
    this.#limit = Math.max(1, Math.floor(limit));
  }

  /** Waits for a free slot, then starts `task`. Throws the first failure of an earlier task. */
  async run(task: () => Promise<void>): Promise<void> {
    while (this.#running.size >= this.#limit) await Promise.race(this.#running);
    if (this.#failed) throw this.#error;
    const p: Promise<void> = task()
      .catch((error: unknown) => {
        if (!this.#failed) {
          this.#failed = true;
          this.#error = error;
        }
      })
      .finally(() => this.#running.delete(p));
    this.#running.add(p);
  }

  /** Waits for every task; throws the first failure. */
  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.race(this.#running);
    if (this.#failed) throw this.#error;
  }
}
