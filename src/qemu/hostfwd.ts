import type { PortForward } from '../domain/types.js';
import { hostfwdRule } from './argv.js';
import type { QmpClient } from './qmp.js';

/**
 * Port forwards of user-mode NICs, changed live. QMP has no command for them, so they go
 * through HMP (`hostfwd_add` / `hostfwd_remove`), which reports failure only as text.
 */

/** Adds a forward to the user-mode NIC `f.nic`; throws QEMU's text when it refuses (hostfwd_add prints nothing when it works). */
export async function addHostForward(qmp: QmpClient, f: PortForward): Promise<void> {
  await qmp.hmpOrThrow(`hostfwd_add ${f.nic} ${hostfwdRule(f)}`);
}

/**
 * Removes a forward from the user-mode NIC `f.nic`. Resolves with QEMU's refusal (e.g. "…
 * not found") or undefined when it was removed: hostfwd_remove prints "host forwarding rule
 * for … removed" on success, so only other output is a refusal. Rejects when QMP fails.
 */
export async function removeHostForward(qmp: QmpClient, f: Pick<PortForward, 'nic' | 'proto' | 'hostAddress' | 'hostPort'>): Promise<string | undefined> {
  const out = (await qmp.humanMonitorCommand(`hostfwd_remove ${f.nic} ${f.proto}:${f.hostAddress}:${f.hostPort}`)).trim();
  return out && !/removed/i.test(out) ? out : undefined;
}
