import { isIP } from 'node:net';
import { QgaError, type QgaClient } from './qga.js';

/**
 * The guest agent commands vmkit uses, each reply checked before anything reads it: the agent
 * is the guest's program, so a field of the wrong type, an oversized list or an address that
 * is not one is refused or dropped here, never passed on. (The client, ./qga.ts, caps sizes
 * and deadlines.)
 */

export const MAX_INTERFACES = 32;
export const MAX_ADDRESSES_PER_INTERFACE = 16;
/** Bytes per guest-file-read/-write call (base64 makes the JSON ≈ 4/3 of it). */
export const FILE_CHUNK_BYTES = 64 * 1024;

function bad(command: string, what: string): QgaError {
  return new QgaError('VMKIT_AGENT_ERROR', `guest agent sent an invalid reply to ${command}: ${what}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function int(value: unknown, command: string, field: string, min = -(2 ** 53), max = 2 ** 53): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw bad(command, `${field} is not an integer in range`);
  return value;
}

function b64(value: unknown, command: string, field: string, maxBytes: number): Buffer {
  if (value === undefined) return Buffer.alloc(0);
  if (typeof value !== 'string' || value.length > Math.ceil(maxBytes / 3) * 4 + 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw bad(command, `${field} is not base64 of at most ${maxBytes} bytes`);
  }
  return Buffer.from(value, 'base64');
}

export async function ping(c: QgaClient, timeoutMs?: number): Promise<void> {
  await c.execute('guest-ping', undefined, { timeoutMs });
}

// ---- exec ----------------------------------------------------------------------------------

export interface ExecStart {
  path: string;
  args: string[];
  env?: string[];
  input?: Buffer;
}

export async function execStart(c: QgaClient, req: ExecStart): Promise<number> {
  const args: Record<string, unknown> = { path: req.path, arg: req.args, 'capture-output': true };
  if (req.env?.length) args.env = req.env;
  if (req.input?.length) args['input-data'] = req.input.toString('base64');
  const r = await c.execute('guest-exec', args);
  if (!isRecord(r)) throw bad('guest-exec', 'not an object');
  return int(r.pid, 'guest-exec', 'pid', 1, 2 ** 31);
}

export interface ExecStatus {
  exited: boolean;
  exitCode?: number;
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  truncated: boolean;
}

export async function execStatus(c: QgaClient, pid: number, maxOutputBytes: number): Promise<ExecStatus> {
  const cmd = 'guest-exec-status';
  const r = await c.execute(cmd, { pid });
  if (!isRecord(r) || typeof r.exited !== 'boolean') throw bad(cmd, 'no "exited"');
  const s: ExecStatus = {
    exited: r.exited,
    stdout: b64(r['out-data'], cmd, 'out-data', maxOutputBytes),
    stderr: b64(r['err-data'], cmd, 'err-data', maxOutputBytes),
    truncated: r['out-truncated'] === true || r['err-truncated'] === true,
  };
  if (r.exitcode !== undefined) s.exitCode = int(r.exitcode, cmd, 'exitcode', -(2 ** 31), 2 ** 31);
  if (r.signal !== undefined) s.signal = int(r.signal, cmd, 'signal', 0, 128);
  return s;
}

// ---- files ---------------------------------------------------------------------------------

export type FileMode = 'r' | 'w' | 'a';

export async function fileOpen(c: QgaClient, path: string, mode: FileMode): Promise<number> {
  const r = await c.execute('guest-file-open', { path, mode: `${mode}b` });
  return int(r, 'guest-file-open', 'handle', 0);
}

export async function fileClose(c: QgaClient, handle: number): Promise<void> {
  await c.execute('guest-file-close', { handle });
}

export async function fileRead(c: QgaClient, handle: number, count = FILE_CHUNK_BYTES): Promise<{ data: Buffer; eof: boolean }> {
  const cmd = 'guest-file-read';
  const r = await c.execute(cmd, { handle, count });
  if (!isRecord(r) || typeof r.eof !== 'boolean') throw bad(cmd, 'no "eof"');
  const n = int(r.count, cmd, 'count', 0, count);
  const data = b64(r['buf-b64'], cmd, 'buf-b64', count);
  if (data.length !== n) throw bad(cmd, `count ${n} but ${data.length} bytes`);
  return { data, eof: r.eof };
}

export async function fileWrite(c: QgaClient, handle: number, data: Buffer): Promise<number> {
  const cmd = 'guest-file-write';
  const r = await c.execute(cmd, { handle, 'buf-b64': data.toString('base64') });
  if (!isRecord(r)) throw bad(cmd, 'not an object');
  return int(r.count, cmd, 'count', 0, data.length);
}

// ---- network -------------------------------------------------------------------------------

export interface AgentInterface {
  name: string;
  mac?: string;
  ipv4: string[];
  ipv6: string[];
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * guest-network-get-interfaces, reduced to what vmkit shows: at most MAX_INTERFACES
 * interfaces of MAX_ADDRESSES_PER_INTERFACE addresses, names printable and short, MACs and
 * addresses that parse as such (anything else is dropped, not echoed).
 */
export async function networkInterfaces(c: QgaClient, timeoutMs?: number): Promise<AgentInterface[]> {
  const r = await c.execute('guest-network-get-interfaces', undefined, { timeoutMs });
  if (!Array.isArray(r)) throw bad('guest-network-get-interfaces', 'not a list');
  const out: AgentInterface[] = [];
  for (const i of r.slice(0, MAX_INTERFACES)) {
    if (!isRecord(i) || typeof i.name !== 'string') continue;
    const name = i.name.replace(/[^\x21-\x7e]/g, '?').slice(0, 32);
    const mac = typeof i['hardware-address'] === 'string' ? i['hardware-address'].toLowerCase() : undefined;
    const itf: AgentInterface = { name, ipv4: [], ipv6: [] };
    if (mac && MAC.test(mac)) itf.mac = mac;
    const addrs = Array.isArray(i['ip-addresses']) ? i['ip-addresses'].slice(0, MAX_ADDRESSES_PER_INTERFACE) : [];
    for (const a of addrs) {
      if (!isRecord(a) || typeof a['ip-address'] !== 'string' || a['ip-address'].length > 45) continue;
      const ip = a['ip-address'];
      const v = isIP(ip);
      if (v === 4 && a['ip-address-type'] !== 'ipv6') itf.ipv4.push(ip);
      else if (v === 6 && a['ip-address-type'] !== 'ipv4') itf.ipv6.push(ip);
    }
    out.push(itf);
  }
  return out;
}

/** A guest-supplied text as vmkit shows it: printable ASCII only, trimmed, at most `max` characters. */
function label(value: unknown, max: number): string | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value
    .replace(/[^\x20-\x7e]/g, '?')
    .trim()
    .slice(0, max);
  return text || undefined;
}

/** guest-get-host-name: the guest's host name (printable, at most 64 characters). */
export async function hostName(c: QgaClient, timeoutMs?: number): Promise<string | undefined> {
  const r = await c.execute('guest-get-host-name', undefined, { timeoutMs });
  if (!isRecord(r)) throw bad('guest-get-host-name', 'not an object');
  return label(r['host-name'], 64);
}

/**
 * guest-get-osinfo: the distribution's name (os-release's PRETTY_NAME, else NAME VERSION) and
 * the kernel release, each printable and capped (an agent without os-release gives the kernel only).
 */
export async function osInfo(c: QgaClient, timeoutMs?: number): Promise<{ os?: string; kernel?: string }> {
  const r = await c.execute('guest-get-osinfo', undefined, { timeoutMs });
  if (!isRecord(r)) throw bad('guest-get-osinfo', 'not an object');
  const named = [label(r.name, 64), label(r.version, 64)].filter((x) => x).join(' ');
  const os = label(r['pretty-name'], 128) ?? label(named, 128);
  const kernel = label(r['kernel-release'], 128);
  return { ...(os ? { os } : {}), ...(kernel ? { kernel } : {}) };
}

// ---- filesystems, power, clock -------------------------------------------------------------

/** Freezes every filesystem the agent can; resolves with how many. */
export async function fsfreeze(c: QgaClient, timeoutMs: number): Promise<number> {
  return int(await c.execute('guest-fsfreeze-freeze', undefined, { timeoutMs }), 'guest-fsfreeze-freeze', 'count', 0);
}

export async function fsthaw(c: QgaClient, timeoutMs: number): Promise<number> {
  return int(await c.execute('guest-fsfreeze-thaw', undefined, { timeoutMs }), 'guest-fsfreeze-thaw', 'count', 0);
}

export async function fsfreezeStatus(c: QgaClient): Promise<'thawed' | 'frozen'> {
  const r = await c.execute('guest-fsfreeze-status');
  if (r !== 'thawed' && r !== 'frozen') throw bad('guest-fsfreeze-status', 'neither thawed nor frozen');
  return r;
}

/** Asks the guest OS to power off. The agent never answers it (it may be gone before it could). */
export async function shutdown(c: QgaClient): Promise<void> {
  await c.execute('guest-shutdown', { mode: 'powerdown' }, { noReply: true });
}

/** Sets the guest's clock to the host's (ns since the epoch); the agent also writes the RTC. */
export async function setTime(c: QgaClient, nowNs: bigint, timeoutMs?: number): Promise<void> {
  // JSON numbers are doubles: ns since 1970 (≈1.8e18) keep ~256 ns of precision, plenty here.
  await c.execute('guest-set-time', { time: Number(nowNs) }, { timeoutMs });
}
