// Wire types of /1.0/networks (defined in src/wire/network.ts): the CLI imports these, never the network manager itself.
export type { NetworkNicView, NetworkView } from '../wire/types.js';
