import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';
import { PortForwardSchema } from './instance.js';

export const NETWORK_MODES = ['nat', 'host-only', 'internal', 'bridged'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];

const networkFields = {
  name: Type.String(),
  mode: StringEnum(NETWORK_MODES),
  // Linux bridge name (≤ 15 chars, prefix vmkbr-).
  bridge: Type.String(),
  // CIDR, network address form (10.80.0.0/24). Absent for bridged and subnet-less internal.
  subnet: Type.Optional(Type.String()),
  // The host's address on the bridge (first usable): the guests' router and DNS server for
  // nat; the host's address for host-only; for internal only a firewalled service address
  // for DHCP/DNS (the host answers nothing else there and routes nothing).
  hostAddress: Type.Optional(Type.String()),
  dhcp: Type.Boolean(),
  dhcpRange: Type.Optional(Type.Object({ start: Type.String(), end: Type.String() })),
  dns: Type.Boolean(),
  // bridged: the host interface enslaved to the bridge.
  uplink: Type.Optional(Type.String()),
  // Host services guests on this network may reach besides DHCP/DNS (`tcp/8080`, `udp/N-M`):
  // `vmkit network set NET --allow-host`. Absent = none.
  allowHost: Type.Optional(Type.Array(Type.String())),
  createdAt: Type.String(),
};

/** A network as stored (a Linux bridge with a mode); the API answers with NetworkView. */
export const NetworkSchema = Type.Object(networkFields);
export type Network = Static<typeof NetworkSchema>;

export const NetworkNicViewSchema = Type.Object({
  instance: Type.String(),
  nic: Type.String(),
  mac: Type.String(),
  model: Type.String(),
  ipv4: Type.Optional(Type.String()),
  tap: Type.String(),
  state: Type.String(),
});
export type NetworkNicView = Static<typeof NetworkNicViewSchema>;

/** A dnsmasq lease; expires is seconds since the epoch (0 = infinite). */
export const LeaseSchema = Type.Object({ expires: Type.Integer(), mac: Type.String(), ipv4: Type.String(), hostname: Type.String() });
export type Lease = Static<typeof LeaseSchema>;

/** GET /1.0/networks[/{name}]: leases, attached NICs, forwards. */
export const NetworkViewSchema = Type.Object({
  ...networkFields,
  nics: Type.Array(NetworkNicViewSchema),
  leases: Type.Array(LeaseSchema),
  forwards: Type.Array(Type.Object({ ...PortForwardSchema.properties, instance: Type.String(), guestIp: Type.Optional(Type.String()) })),
});
export type NetworkView = Static<typeof NetworkViewSchema>;

/** GET/PATCH /1.0/networks/{name}/host-access (also for the pseudo-network "user"). */
export const HostAccessSchema = Type.Object({ network: Type.String(), allowHost: Type.Array(Type.String()) });
export type HostAccess = Static<typeof HostAccessSchema>;
