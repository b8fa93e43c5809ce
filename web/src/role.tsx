import { createContext, useContext, type ReactNode } from 'react';
import { roleAtLeast, type Role } from '../../src/wire/auth.js';

/**
 * The signed-in token's role (GET /1.0/auth/whoami). The console shows only what the role may
 * do — the same rules as the daemon's table (src/api/roles.ts): viewer reads, operator runs
 * instances (lifecycle, snapshots, forwards, consoles), admin also manages images, networks
 * and the cluster. Hiding is for clarity only: the daemon enforces the rule on every call.
 */
export const RoleContext = createContext<Role>('viewer');
export const useRole = () => useContext(RoleContext);
export const useCan = (needed: Role) => roleAtLeast(useContext(RoleContext), needed);

/** Renders its children only for a role that may do `need`. */
export function Can({ need, children }: { need: Role; children: ReactNode }) {
  return useCan(need) ? <>{children}</> : null;
}
