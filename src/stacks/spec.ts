import { isIPv4 } from 'node:net';
import { parseDocument } from 'yaml';
import { vmkitError, type VmkitError } from '../errors.js';
import { NAME_PATTERN } from '../domain/name-rule.js';
import { INSTANCE_TYPES } from '../domain/instance-types.js';
import type { StackHealth, StackNetworkSpec, StackServiceSpec, StackSpec, StackUpdate } from '../wire/stack.js';

export type { StackHealth, StackNetworkSpec, StackServiceSpec, StackSpec, StackUpdate } from '../wire/stack.js';

/** The most replicas one service may ask for (a typo like 300 must not fill the host). */
export const MAX_REPLICAS = 32;
const NETWORK_MODES = ['nat', 'host-only', 'internal'] as const;

/**
 * A bad stack file: VMKIT_STACK_INVALID with the path of the bad field (`services[0].replicas`)
 * in the message and in `details.path`, so editors and scripts can point at it.
 */
export function stackInvalid(path: string, problem: string, hint = 'See doc/stacks.md for the stack file format.'): VmkitError {
  return vmkitError('VMKIT_STACK_INVALID', `${path ? `${path}: ` : ''}${problem}`, { hint, details: { path } });
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, path: string): Obj {
  if (!isObj(v)) throw stackInvalid(path, `must be a mapping (key: value), not ${describe(v)}`);
  return v;
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'empty';
  if (Array.isArray(v)) return 'a list';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function onlyKeys(o: Obj, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw stackInvalid(`${path ? `${path}.` : ''}${k}`, `unknown field (known: ${allowed.join(', ')})`);
  }
}

function name(v: unknown, path: string): string {
  if (typeof v !== 'string' || !NAME_PATTERN.test(v) || v.length > 40) {
    throw stackInvalid(path, `${describe(v)} is not a valid name`, 'Use 1-40 characters: lowercase letters, digits and "-", starting and ending with a letter or digit.');
  }
  return v;
}

function int(v: unknown, path: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw stackInvalid(path, `must be a whole number from ${min} to ${max}, not ${describe(v)}`);
  return v;
}

function str(v: unknown, path: string): string {
  if (typeof v !== 'string' || v === '') throw stackInvalid(path, `must be a non-empty string, not ${describe(v)}`);
  return v;
}

function list(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) throw stackInvalid(path, `must be a list, not ${describe(v)}`);
  return v;
}

function network(v: unknown, path: string): StackNetworkSpec {
  const o = obj(v, path);
  onlyKeys(o, path, ['name', 'mode', 'subnet']);
  const n = name(o.name, `${path}.name`);
  if (n === 'user') throw stackInvalid(`${path}.name`, '"user" is QEMU user-mode NAT, not a network a stack can declare');
  const mode = o.mode ?? 'nat';
  if (!NETWORK_MODES.includes(mode as never)) throw stackInvalid(`${path}.mode`, `must be one of ${NETWORK_MODES.join(', ')}, not ${describe(mode)}`);
  const subnet = str(o.subnet, `${path}.subnet`);
  if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(subnet) || !isIPv4(subnet.split('/')[0]!) || Number(subnet.split('/')[1]) > 30 || Number(subnet.split('/')[1]) < 8) {
    throw stackInvalid(`${path}.subnet`, `${JSON.stringify(subnet)} is not an IPv4 subnet (a.b.c.d/8 to /30)`);
  }
  return { name: n, mode: mode as StackNetworkSpec['mode'], subnet };
}

function health(v: unknown, path: string): StackHealth {
  const o = obj(v, path);
  onlyKeys(o, path, ['http', 'intervalMs', 'failures', 'timeoutMs']);
  const http = str(o.http, `${path}.http`);
  if (!http.startsWith('/') || /[\s?#]/.test(http))
    throw stackInvalid(`${path}.http`, `must be a path starting with "/" (no spaces, query or fragment), not ${JSON.stringify(http)}`);
  const intervalMs = o.intervalMs === undefined ? 1000 : int(o.intervalMs, `${path}.intervalMs`, 100, 60_000);
  const failures = o.failures === undefined ? 3 : int(o.failures, `${path}.failures`, 1, 100);
  const timeoutMs = o.timeoutMs === undefined ? Math.min(2000, intervalMs) : int(o.timeoutMs, `${path}.timeoutMs`, 50, 60_000);
  return { http, intervalMs, failures, timeoutMs };
}

function update(v: unknown, path: string): StackUpdate {
  if (v === undefined) return { maxUnavailable: 0, maxSurge: 1, readyTimeoutMs: 300_000 };
  const o = obj(v, path);
  onlyKeys(o, path, ['maxUnavailable', 'maxSurge', 'readyTimeoutMs']);
  const maxUnavailable = o.maxUnavailable === undefined ? 0 : int(o.maxUnavailable, `${path}.maxUnavailable`, 0, MAX_REPLICAS);
  const maxSurge = o.maxSurge === undefined ? 1 : int(o.maxSurge, `${path}.maxSurge`, 0, MAX_REPLICAS);
  if (maxUnavailable === 0 && maxSurge === 0) throw stackInvalid(path, 'maxUnavailable and maxSurge cannot both be 0 (the roll could never make progress)');
  const readyTimeoutMs = o.readyTimeoutMs === undefined ? 300_000 : int(o.readyTimeoutMs, `${path}.readyTimeoutMs`, 1000, 3_600_000);
  return { maxUnavailable, maxSurge, readyTimeoutMs };
}

function service(v: unknown, path: string): StackServiceSpec {
  const o = obj(v, path);
  onlyKeys(o, path, ['name', 'image', 'type', 'cpus', 'memoryMiB', 'replicas', 'networks', 'port', 'hostAddress', 'guestPort', 'address', 'health', 'update', 'userData']);
  const s: StackServiceSpec = {
    name: name(o.name, `${path}.name`),
    image: str(o.image, `${path}.image`),
    replicas: o.replicas === undefined ? 1 : int(o.replicas, `${path}.replicas`, 0, MAX_REPLICAS),
    networks: [],
    update: update(o.update, `${path}.update`),
  };
  if (!/^[a-z0-9][a-z0-9._:-]*$/.test(s.image)) throw stackInvalid(`${path}.image`, `${JSON.stringify(s.image)} is not an image name`);
  if (o.type !== undefined) {
    s.type = str(o.type, `${path}.type`);
    if (!INSTANCE_TYPES.some((t) => t.name === s.type))
      throw stackInvalid(`${path}.type`, `unknown type ${JSON.stringify(s.type)} (known: ${INSTANCE_TYPES.map((t) => t.name).join(', ')})`);
  }
  if (o.cpus !== undefined) s.cpus = int(o.cpus, `${path}.cpus`, 1, 64);
  if (o.memoryMiB !== undefined) s.memoryMiB = int(o.memoryMiB, `${path}.memoryMiB`, 64, 1 << 20);
  const nets = o.networks === undefined ? [] : list(o.networks, `${path}.networks`);
  for (const [i, n] of nets.entries()) {
    const p = `${path}.networks[${i}]`;
    const nn = name(n, p);
    if (s.networks.includes(nn)) throw stackInvalid(p, `network ${JSON.stringify(nn)} is listed twice`);
    s.networks.push(nn);
  }
  if (o.userData !== undefined) s.userData = str(o.userData, `${path}.userData`);
  if (o.port !== undefined) s.port = int(o.port, `${path}.port`, 1024, 65535);
  if (o.hostAddress !== undefined) {
    if (typeof o.hostAddress !== 'string' || !isIPv4(o.hostAddress)) throw stackInvalid(`${path}.hostAddress`, `must be an IPv4 address, not ${describe(o.hostAddress)}`);
    if (s.port === undefined) throw stackInvalid(`${path}.hostAddress`, 'is the address of the host port: give "port" too');
    s.hostAddress = o.hostAddress;
  }
  if (o.address !== undefined) {
    const a = str(o.address, `${path}.address`);
    const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(a);
    if (!m || !isIPv4(m[1]!) || Number(m[2]) < 1 || Number(m[2]) > 65535)
      throw stackInvalid(`${path}.address`, `must be IP:PORT on the service's network, not ${JSON.stringify(a)}`);
    s.address = a;
  }
  if (o.guestPort !== undefined) s.guestPort = int(o.guestPort, `${path}.guestPort`, 1, 65535);
  if ((s.port !== undefined || s.address !== undefined) && s.guestPort === undefined) s.guestPort = 80;
  if (o.health !== undefined) s.health = health(o.health, `${path}.health`);
  if (s.port !== undefined || s.address !== undefined || s.health !== undefined) {
    const first = s.networks[0];
    if (!first)
      throw stackInvalid(`${path}.networks`, 'a service with a port, an address or a health check needs a network: its replicas are reached at their address on the first one');
  }
  for (const [i, n] of s.networks.entries()) {
    if (n === 'user' && i === 0 && (s.port !== undefined || s.address !== undefined || s.health !== undefined)) {
      throw stackInvalid(`${path}.networks[0]`, 'the first network of a load-balanced service must be a vmkit network (nat), not "user"');
    }
  }
  return s;
}

/**
 * Parses and checks a stack file (YAML or JSON text, or an already parsed object). Pure: it
 * does not look at the host; whether images and outside networks exist is the controller's
 * check. Defaults are filled in, so two files that mean the same give the same spec.
 */
export function parseStack(input: string | unknown): StackSpec {
  let raw: unknown = input;
  if (typeof input === 'string') {
    const doc = parseDocument(input, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const at = e.linePos?.[0] ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
      throw stackInvalid('', `not valid YAML${at}: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
    }
    raw = doc.toJS();
  }
  const o = obj(raw, '');
  onlyKeys(o, '', ['name', 'networks', 'services']);
  const stackName = name(o.name, 'name');
  const networks: StackNetworkSpec[] = [];
  for (const [i, n] of (o.networks === undefined ? [] : list(o.networks, 'networks')).entries()) {
    const net = network(n, `networks[${i}]`);
    if (networks.some((x) => x.name === net.name)) throw stackInvalid(`networks[${i}].name`, `network ${JSON.stringify(net.name)} is declared twice`);
    networks.push(net);
  }
  const services: StackServiceSpec[] = [];
  const rawServices = list(o.services, 'services');
  if (rawServices.length === 0) throw stackInvalid('services', 'a stack needs at least one service');
  for (const [i, s] of rawServices.entries()) {
    const svc = service(s, `services[${i}]`);
    if (services.some((x) => x.name === svc.name)) throw stackInvalid(`services[${i}].name`, `service ${JSON.stringify(svc.name)} is declared twice`);
    if (`${stackName}-${svc.name}-99`.length > 63)
      throw stackInvalid(`services[${i}].name`, 'the stack and service names together are too long for replica names (at most 59 characters)');
    if (svc.port !== undefined) {
      const clash = services.find((x) => x.port === svc.port);
      if (clash) throw stackInvalid(`services[${i}].port`, `port ${svc.port} is already the port of service ${JSON.stringify(clash.name)}`);
    }
    services.push(svc);
  }
  return { name: stackName, networks, services };
}

/** What makes a replica: a change here rolls the service (image, size, networks, user-data). */
export function templateOf(s: StackServiceSpec): { image: string; type?: string; cpus?: number; memoryMiB?: number; networks: string[]; userData?: string } {
  return { image: s.image, type: s.type, cpus: s.cpus, memoryMiB: s.memoryMiB, networks: s.networks, userData: s.userData };
}

/** A short stable key of a template (replicas remember the one they were made from). */
export function templateKey(s: StackServiceSpec): string {
  return JSON.stringify(templateOf(s));
}

export function sameSpec(a: StackSpec | undefined, b: StackSpec | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
