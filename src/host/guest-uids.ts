/**
 * The uids (and gids, same numbers) vmkit gives its guests' QEMU processes: each instance
 * gets one of its own, recorded with the instance. They belong to no account in
 * /etc/passwd (like Incus's and LXD's id maps, they are only numbers), sit above the ranges
 * distributions hand to people (1000–59999) and to /etc/subuid (100000 + 65536·n for the
 * first users), and the network guard uses the whole range to tell guests' sockets from the
 * host's own (`meta skuid`).
 */
export const GUEST_UID_BASE = 940_000;
export const GUEST_UID_COUNT = 50_000;

/** `first-last`, as nftables writes a range. */
export function guestUidRange(): string {
  return `${GUEST_UID_BASE}-${GUEST_UID_BASE + GUEST_UID_COUNT - 1}`;
}

export function isGuestUid(uid: number): boolean {
  return Number.isInteger(uid) && uid >= GUEST_UID_BASE && uid < GUEST_UID_BASE + GUEST_UID_COUNT;
}
