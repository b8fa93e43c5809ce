import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';

/**
 * Roles of API tokens, weakest first: a role may do everything the ones before it may.
 * viewer: read-only (GETs, the event stream, logs; no console). operator: instance
 * lifecycle, snapshots, forwards, NICs, consoles. admin: everything (images, networks,
 * cluster, repositories, tokens). The route → role table is src/api/roles.ts.
 */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Whether `role` may do what `needed` may. */
export function roleAtLeast(role: Role | undefined, needed: Role): boolean {
  return role !== undefined && ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/** A token as listed (the secret is never stored, only its SHA-256). */
export const TokenInfoSchema = Type.Object({
  name: Type.String(),
  role: StringEnum(ROLES),
  createdAt: Type.String(),
  /** Absent: never expires. */
  expiresAt: Type.Optional(Type.String()),
  lastUsedAt: Type.Optional(Type.String()),
});
export type TokenInfo = Static<typeof TokenInfoSchema>;

/** POST /1.0/tokens answers the new token once, with its secret. */
export const CreatedTokenSchema = Type.Object({ ...TokenInfoSchema.properties, token: Type.String() });
export type CreatedToken = Static<typeof CreatedTokenSchema>;

export const CreateTokenSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 63 }),
    role: StringEnum(ROLES),
    /** A duration: 30s, 90m, 12h, 30d, 8w. Absent: the token never expires. */
    expires: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,5}[smhdw]$' })),
  },
  { additionalProperties: false },
);
export type CreateToken = Static<typeof CreateTokenSchema>;

/** GET /1.0/auth/whoami: who the request is authenticated as. */
export const WhoamiSchema = Type.Object({
  name: Type.String(),
  role: StringEnum(ROLES),
  /** unix-socket (root, no token), bearer, or cookie (a browser session). */
  method: StringEnum(['unix-socket', 'bearer', 'cookie'] as const),
  expiresAt: Type.Optional(Type.String()),
});
export type Whoami = Static<typeof WhoamiSchema>;
