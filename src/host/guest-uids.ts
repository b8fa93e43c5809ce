import { vmkitError } from '../errors.js';

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

/**
 * The lowest uid of the range no instance holds (`used`: the uids of every instance row on
 * this host, and those being created). The uid doubles as the gid. A uid is free again once
 * the instance that held it is deleted: its files went with it.
 */
export function allocateGuestUid(used: Iterable<number>): number {
  const taken = new Set(used);
  for (let uid = GUEST_UID_BASE; uid < GUEST_UID_BASE + GUEST_UID_COUNT; uid++) {
    if (!taken.has(uid)) return uid;
  }
  throw vmkitError('VMKIT_RESOURCES_EXCEEDED', `All ${GUEST_UID_COUNT} guest uids (${guestUidRange()}) are in use on this host.`, {
    hint: 'Delete instances you no longer need; each instance holds one uid until it is deleted.',
  });
}

/**
 * Whether QEMU processes run under guest uids: yes when the daemon is root, unless
 * VMKIT_QEMU_AS_ROOT=1 — a switch for the bench alone (it measures what the confinement
 * costs against the old set-up); not a user setting, not documented as one.
 */
export function confineGuests(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.VMKIT_QEMU_AS_ROOT !== '1' && process.getuid?.() === 0;
}
