import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dnsmasqFiles, readPid } from '../dist/network/dnsmasq.js';
import { renderRuleset } from '../dist/network/nftables.js';
import { validateNetworkRequest, type Network } from '../dist/network/network.js';
import { ROOT, sleep } from './helpers.js';
import { createNetns, deleteNetns, ns, nsRun } from './netns.js';

/**
 * vmkit's DHCP guard with real nft and a real dnsmasq, without QEMU: a namespace "host" holds
 * a vmkit bridge, the ruleset vmkit renders for one NIC and the dnsmasq vmkit configures; a
 * namespace "guest" sends hand-made DHCP frames into the bridge through a veth named like
 * that NIC's tap (a guest cannot forge a chaddr with the appliance's busybox, a raw socket can).
 *   guest: atk0 ──veth── vmkt-forge00-0 ─ vmkbr-dhcpt (10.88.0.1/24, dnsmasq) ─ vmkt-plain0-0 ── atk1
 */
const REAL = '52:54:00:aa:00:01';
const VICTIM = '52:54:00:aa:00:02';
const STRANGER = '52:54:00:ee:ee:ee';

// One DHCPDISCOVER in a raw Ethernet frame: ether source `src`, BOOTP chaddr `chaddr`.
const SEND = `
import socket, struct, sys
ifname, src, chaddr = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', '')), bytes.fromhex(sys.argv[3].replace(':', ''))
bootp = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, 0x1234abcd, 0, 0x8000, b'\\0'*4, b'\\0'*4, b'\\0'*4, b'\\0'*4, chaddr + b'\\0'*10, b'\\0'*64, b'\\0'*128)
bootp += bytes([99, 130, 83, 99, 53, 1, 1, 255])
udp = struct.pack('!HHHH', 68, 67, 8 + len(bootp), 0) + bootp
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, b'\\0'*4, b'\\xff'*4)
hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
frame = b'\\xff'*6 + src + b'\\x08\\x00' + hdr + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(frame)
`;

describe('DHCP guard: chaddr = source MAC, reservations only, unprivileged dnsmasq (real nft + dnsmasq)', { timeout: 120_000 }, () => {
  let host = '';
  let guest = '';
  let dir = '';
  let n: Network;
  const files = () => dnsmasqFiles(join(dir, 'networks', 'dhcpt'));
  const send = (ifname: string, src: string, chaddr: string) => ns(guest, ['python3', '-c', SEND, ifname, src, chaddr]);
  const log = () => readFileSync(files().log, 'utf8');
  async function waitLog(re: RegExp, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (re.test(log())) return true;
      await sleep(100);
    }
    return false;
  }

  before(async () => {
    host = createNetns('dh');
    guest = createNetns('dg');
    dir = mkdtempSync('/tmp/vmkt-dh-');
    n = { ...validateNetworkRequest({ name: 'dhcpt', mode: 'host-only', subnet: '10.88.0.0/24' }), bridge: 'vmkbr-dhcpt', createdAt: 'x' };
    ns(host, ['ip', 'link', 'add', n.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    ns(host, ['ip', 'addr', 'add', '10.88.0.1/24', 'dev', n.bridge]);
    ns(host, ['ip', 'link', 'set', n.bridge, 'up']);
    for (const [tap, peer] of [
      ['vmkt-forge00-0', 'atk0'],
      ['vmkt-plain0-0', 'atk1'],
    ] as const) {
      ns(host, ['ip', 'link', 'add', tap, 'type', 'veth', 'peer', 'name', peer, 'netns', guest]);
      ns(host, ['ip', 'link', 'set', tap, 'master', n.bridge, 'up']);
      ns(guest, ['ip', 'link', 'set', peer, 'up']);
    }
    // vmkit's rules for one NIC (REAL on vmkt-forge00-0); vmkt-plain0-0 has none.
    writeFileSync(join(dir, 'rules.nft'), renderRuleset({ networks: [n], nics: [{ tap: 'vmkt-forge00-0', mac: REAL, ipv4: '10.88.0.100', bridge: n.bridge }], forwards: [] }));
    ns(host, ['nft', '-f', join(dir, 'rules.nft')]);
  });

  after(async () => {
    if (host) deleteNetns(host);
    if (guest) deleteNetns(guest);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('dnsmasq runs as nobody, serves reservations only, and a gone NIC’s lease does not block its address', async () => {
    // A lease left by a NIC that is gone (OLD held .100, now reserved for REAL).
    const f = files();
    mkdirSync(f.dir, { recursive: true });
    writeFileSync(f.leases, `${Math.floor(Date.now() / 1000) + 3600} 52:54:00:0d:0d:0d 10.88.0.100 old *\n`);
    // dnsmasq must start inside "host": vmkit's module runs there in a child node.
    const script = `
      import { ensureDnsmasq, dnsmasqFiles } from '${join(ROOT, 'dist/network/dnsmasq.js')}';
      await ensureDnsmasq(${JSON.stringify(n)}, dnsmasqFiles(${JSON.stringify(f.dir)}), ${JSON.stringify([
        { mac: REAL, ipv4: '10.88.0.100', name: 'real' },
        { mac: VICTIM, ipv4: '10.88.0.101', name: 'victim' },
      ])});`;
    const r = nsRun(host, [process.execPath, '--input-type=module', '-e', script]);
    assert.equal(r.code, 0, r.stderr);
    const pid = await readPid(f);
    assert.ok(pid, 'dnsmasq runs');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'dnsmasq dropped to nobody');
    assert.doesNotMatch(readFileSync(f.leases, 'utf8'), /0d:0d:0d/, 'the stale lease was removed before dnsmasq started');

    // The NIC itself: offered its reserved address (the stale lease no longer holds it).
    send('atk0', REAL, REAL);
    assert.ok(await waitLog(/DHCPOFFER\(vmkbr-dhcpt\) 10\.88\.0\.100 52:54:00:aa:00:01/), log());
    // A MAC without a reservation, through a port without anti-spoofing rules: nothing offered.
    send('atk1', STRANGER, STRANGER);
    assert.ok(await waitLog(/DHCPDISCOVER\(vmkbr-dhcpt\) 52:54:00:ee:ee:ee/), log());
    await sleep(300);
    assert.doesNotMatch(log(), /DHCPOFFER\(vmkbr-dhcpt\) [0-9.]+ 52:54:00:ee:ee:ee/);
  });

  it("a request whose chaddr is not the frame's source MAC is dropped at the tap", async () => {
    // The NIC asks for its neighbour's reservation, and for a made-up client: dnsmasq never sees them.
    send('atk0', REAL, VICTIM);
    send('atk0', REAL, STRANGER.replace('ee:ee:ee', 'ee:ee:01'));
    // A frame that does pass afterwards proves the forged ones had their chance to arrive.
    send('atk0', REAL, REAL);
    await sleep(300);
    const before = log()
      .split('\n')
      .filter((l) => /DHCPDISCOVER\(vmkbr-dhcpt\) 52:54:00:aa:00:01/.test(l)).length;
    assert.ok(before >= 2, log());
    assert.doesNotMatch(log(), /52:54:00:aa:00:02/, 'the forged chaddr reached dnsmasq');
    assert.doesNotMatch(log(), /52:54:00:ee:ee:01/, 'the forged chaddr reached dnsmasq');
    // Control: without vmkit's rules the same forged frame does reach dnsmasq (the test can fail).
    ns(host, ['nft', 'delete', 'table', 'bridge', 'vmkit']);
    send('atk0', REAL, VICTIM);
    assert.ok(await waitLog(/DHCPDISCOVER\(vmkbr-dhcpt\) 52:54:00:aa:00:02/), 'without the rules the forged request arrives');
  });
});
