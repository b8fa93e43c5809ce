/**
 * Undo steps gathered while work proceeds (after Incus's `revert` package): each step that
 * changed something adds how to take it back; on failure `fail()` runs them newest first,
 * and on success `success()` drops them. A step that fails does not stop the others, and it
 * is logged with what it was undoing: a half-done undo must leave a trail, never silence.
 */
export class Revert {
  private steps: Array<{ what: string; undo: () => unknown }> = [];

  /** `log` receives one line per failed step (default: the daemon's stderr). */
  constructor(private readonly log: (msg: string) => void = (msg) => console.error(`vmkitd: ${msg}`)) {}

  /** `what` names the change being undone, as the log line will say it ("undoing WHAT failed"). */
  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
  }

  /** The work succeeded: nothing is undone. */
  success(): void {
    this.steps = [];
  }

  /** Runs every step, newest first, once; true when all of them succeeded. Never throws. */
  async fail(): Promise<boolean> {
    const steps = this.steps.reverse();
    this.steps = [];
    let clean = true;
    for (const s of steps) {
      try {
        await s.undo();
      } catch (err) {
        clean = false;
        this.log(`undoing ${s.what} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return clean;
  }
}
