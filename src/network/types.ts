import type { PortForward } from '../domain/types.js';
import type { Lease } from './dnsmasq.js';
import type { Network } from './network.js';

// Wire types of /1.0/networks: the CLI imports these, never the network manager itself.

export interface NetworkNicView {
  instance: string;
  nic: string;
  mac: string;
  model: string;
  ipv4?: string;
  tap: string;
  state: string;
}

export interface NetworkView extends Network {
  nics: NetworkNicView[];
  leases: Lease[];
  forwards: Array<PortForward & { instance: string; guestIp?: string }>;
}
