import { afterEach, describe, expect, it, vi } from "vitest";
import { ProgressLine } from "../../cli/progress.ts";

afterEach(() => vi.restoreAllMocks());

describe("ProgressLine", () => {
  it("GIVEN a terminal WHEN updated THEN it prints blocks, bytes and an ETA on one rewritten line", () => {
    const writes: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
      writes.push(String(chunk));
      return true;
    });
    const line = new ProgressLine("restoring vol-a", true);
    line.update(10, 40, 10 * 524288);
    line.done("restored vol-a");
    expect(writes[0]).toMatch(/^\rrestoring vol-a: 10\/~40 blocks, 5\.0 MiB, .*\/s ETA \d+ s/);
    expect(writes[1]).toMatch(/^\rrestored vol-a/);
  });

  it("GIVEN no terminal THEN it stays quiet", () => {
    const spy = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    const line = new ProgressLine("restoring vol-a", false);
    line.update(10, 40, 1);
    line.done("restored");
    expect(spy).not.toHaveBeenCalled();
  });
});
