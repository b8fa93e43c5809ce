/** How long an address claim lasts if its create never settles it (the daemon died mid-create: it restarts anyway). */
const CLAIM_MS = 10 * 60_000;

/**
 * Addresses picked for NICs whose instance row is not stored yet: a create clones its disk
 * between the pick and the row, and another create at that moment must not pick the same
 * address. Each ends with `settle` (after the row is written, or the create failed); one left
 * by a crash lapses after CLAIM_MS. Synchronous on purpose: the caller reads the taken
 * addresses, adds `heldFor`, picks and claims without awaiting in between.
 */
export class AddressClaims {
  private readonly claims = new Map<string, { network: string; ip: string; owner: string; until: number }>();

  /** Adds to `taken` the addresses on `network` claimed for instances other than `owner`. */
  heldFor(network: string, owner: string | undefined, taken: Set<string>, now = Date.now()): void {
    for (const [k, c] of this.claims) {
      if (c.until < now) this.claims.delete(k);
      else if (c.network === network && c.owner !== owner) taken.add(c.ip);
    }
  }

  claim(network: string, ip: string, owner: string, now = Date.now()): void {
    this.claims.set(`${network} ${ip}`, { network, ip, owner, until: now + CLAIM_MS });
  }

  /** The instance's row holds its addresses now, or its create failed: its claims end. */
  settle(owner: string): void {
    for (const [k, c] of this.claims) if (c.owner === owner) this.claims.delete(k);
  }
}
