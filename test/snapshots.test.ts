import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, guestStatus, processAlive, sleep, startTestDaemon, waitForHttp, type TestDaemon } from './helpers.js';

interface InstanceJson {
  id: string;
  state: string;
  stateReason?: string;
  runtime: { pid?: number };
}

interface SnapshotJson {
  name: string;
  parent?: string;
  withMemory: boolean;
  vmState: 'running' | 'paused' | null;
  pausedMs: number;
  size?: number;
}

interface OperationJson<T> {
  status: string;
  result: T;
}

/** Checkpoints, revert, suspend/resume against a real daemon and QEMU (TCG in CI). */
describe('snapshots and suspend', () => {
  let d: TestDaemon;
  let port: number;
  const timings: Record<string, number> = {};

  before(async () => {
    d = await startTestDaemon();
    port = await freePort();
    const r = d.cli(['launch', 'appliance', 'web1', '--type', 'small', '--forward', `${port}:80`]);
    assert.equal(r.code, 0, r.stderr);
    await waitForHttp(`http://127.0.0.1:${port}/`);
  });
  after(async () => {
    console.log('timings (ms):', JSON.stringify(timings));
    await d.stop();
  });

  /** Runs shell commands on the guest's serial console; returns what the console printed. */
  function sh(name: string, commands: string): string {
    const r = d.cli(['console', name], { input: `${commands}\n`, timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  /** A file's content read on the console, between markers so the echo of the command does not count. */
  function readGuestFile(name: string, path: string): string {
    const out = sh(name, `echo "<<$(cat ${path} 2>/dev/null || echo MISSING)>>"`);
    const m = /<<([^<>$]*)>>/.exec(out);
    assert.ok(m, `no marker in console output: ${out}`);
    return m[1]!.trim();
  }

  function writeGuestFile(name: string, path: string, value: string): void {
    const out = sh(name, `echo ${value} > ${path}; sync; echo "written-$((40+2))"`);
    assert.match(out, /written-42/);
  }

  function cli(args: string[]): string {
    const r = d.cli(args);
    assert.equal(r.code, 0, `vmkit ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  function createSnapshot(args: string[]): SnapshotJson {
    const t0 = Date.now();
    const op = d.cliJson<OperationJson<{ snapshot: SnapshotJson; durationMs: number }>>(['snapshot', 'create', ...args]);
    timings[`create ${args[1]}`] = Date.now() - t0;
    assert.equal(op.status, 'success');
    timings[`paused for ${args[1]}`] = op.result.snapshot.pausedMs;
    return op.result.snapshot;
  }

  function restore(snapshot: string): void {
    const t0 = Date.now();
    cli(['snapshot', 'restore', 'web1', snapshot]);
    const k = `restore ${snapshot}`;
    timings[k in timings ? `${k} (again)` : k] = Date.now() - t0;
  }

  async function counterAbove(value: number): Promise<number> {
    for (let i = 0; i < 60; i++) {
      const c = (await guestStatus(port)).counter;
      if (c > value) return c;
      await sleep(250);
    }
    throw new Error(`counter never passed ${value}`);
  }

  it('restores disk and memory from the same instant', async () => {
    writeGuestFile('web1', '/data/mark', 'A');
    // A process that runs at snapshot time, killed afterwards: the revert brings it back.
    const started = sh('web1', 'sleep 7777 & echo "<<bg=$!>>"');
    const bgPid = /<<bg=(\d+)>>/.exec(started)?.[1];
    assert.ok(bgPid, started);
    const beforeSnapshot = (await guestStatus(port)).counter;
    const snap = createSnapshot(['web1', 'before', '--description', 'file says A']);
    // The counter only grows: read right after the snapshot, it bounds the snapshot's value
    // from above (the CLI's own start-up time, long on a loaded host, is then not counted).
    const atSnapshot = (await guestStatus(port)).counter;
    assert.ok(atSnapshot >= beforeSnapshot);
    assert.equal(snap.withMemory, true);
    assert.equal(snap.vmState, 'running');
    assert.ok(snap.pausedMs > 0 && snap.pausedMs < 10_000, `paused ${snap.pausedMs} ms`);
    assert.ok((snap.size ?? 0) > 0, 'the vmstate has a size');

    writeGuestFile('web1', '/data/mark', 'B');
    assert.equal(readGuestFile('web1', '/data/mark'), 'B');
    sh('web1', `kill ${bgPid}`);
    // Gone, or a zombie (empty cmdline) until the console shell reaps it.
    assert.doesNotMatch(readGuestFile('web1', `/proc/${bgPid}/cmdline`), /sleep/, 'the process is gone before the revert');
    await counterAbove(atSnapshot + 4);

    restore('before');
    // Read at once: the guest runs on from the restore, so every CLI call before this read
    // (a node start-up each, seconds on a loaded host) would count against the check.
    const back = (await guestStatus(port)).counter;
    assert.ok(back <= atSnapshot + 2, `counter back near the snapshot (${atSnapshot} -> ${back})`);
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'running');
    assert.equal(readGuestFile('web1', '/data/mark'), 'A');
    assert.match(readGuestFile('web1', `/proc/${bgPid}/cmdline`), /sleep/, 'the process killed after the snapshot runs again');
    await counterAbove(back);

    const list = d.cliJson<SnapshotJson[]>(['snapshot', 'list', 'web1']);
    assert.deepEqual(
      list.map((s) => s.name),
      ['before'],
    );
    const table = cli(['snapshot', 'list', 'web1']);
    assert.match(table, /NAME\s+PARENT\s+CREATED\s+MEMORY\s+SIZE/);
    assert.match(table, /before\s+-\s+\S+\s+yes \(running\)/);
  });

  it('deleting a snapshot in the middle of a chain keeps the others restorable', async () => {
    writeGuestFile('web1', '/data/chain', 'one');
    createSnapshot(['web1', 'c1']);
    writeGuestFile('web1', '/data/chain', 'two');
    const c2 = createSnapshot(['web1', 'c2']);
    writeGuestFile('web1', '/data/chain', 'three');
    const c3 = createSnapshot(['web1', 'c3']);
    assert.equal(c3.parent, 'c2');
    const disk = join(d.dir, 'instances', d.cliJson<InstanceJson>(['info', 'web1']).id, 'root.qcow2');
    const allocatedBefore = statSync(disk).blocks * 512;
    cli(['snapshot', 'delete', 'web1', 'c2']);
    const freed = allocatedBefore - statSync(disk).blocks * 512;
    console.log(`deleting c2 freed ${(freed / 1048576).toFixed(1)} MiB on the host (its vmstate was ${((c2.size ?? 0) / 1048576).toFixed(1)} MiB)`);
    assert.ok(freed > (c2.size ?? 0) / 2, `space reclaimed (${freed} bytes)`);
    const list = d.cliJson<SnapshotJson[]>(['snapshot', 'list', 'web1']);
    assert.deepEqual(
      list.map((s) => s.name),
      ['before', 'c1', 'c3'],
    );
    assert.equal(list.find((s) => s.name === 'c3')?.parent, 'c1', 'c3 now descends from c1');
    restore('c1');
    assert.equal(readGuestFile('web1', '/data/chain'), 'one');
    restore('c3');
    assert.equal(readGuestFile('web1', '/data/chain'), 'three');
    for (const s of ['c1', 'c3']) cli(['snapshot', 'delete', 'web1', s]);
  });

  it("a clone from a snapshot boots with the snapshot's disk; its writes change neither the source nor the snapshot", async () => {
    writeGuestFile('web1', '/data/cl', 'at-snap');
    createSnapshot(['web1', 'cl-snap']);
    writeGuestFile('web1', '/data/cl', 'after-snap');
    // The source keeps running while the clone is made.
    cli(['clone', 'web1', 'web1c', '--from-snapshot', 'cl-snap']);
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'running');
    const clone = d.cliJson<InstanceJson>(['info', 'web1c']);
    assert.equal(clone.state, 'stopped');
    // Linked: the new disk is an overlay of the image's read-only volume.
    const info = spawnSync('qemu-img', ['info', '--output=json', '-f', 'qcow2', join(d.dir, 'instances', clone.id, 'root.qcow2')], { encoding: 'utf8' });
    assert.match(JSON.parse(info.stdout)['backing-filename'] ?? '', /images\/appliance\//);
    const port2 = await freePort();
    cli(['forward', 'add', 'web1c', `${port2}:80`]);
    cli(['start', 'web1c']);
    assert.equal((await guestStatus(port2)).hostname, 'web1c');
    assert.equal(readGuestFile('web1c', '/data/cl'), 'at-snap');
    writeGuestFile('web1c', '/data/cl', 'in-clone');
    assert.equal(readGuestFile('web1', '/data/cl'), 'after-snap', 'the source is untouched');
    restore('cl-snap');
    assert.equal(readGuestFile('web1', '/data/cl'), 'at-snap', 'the snapshot is untouched');
    cli(['delete', 'web1c', '--force']);
    cli(['snapshot', 'delete', 'web1', 'cl-snap']);
    const missing = d.cli(['clone', 'web1', 'web1d', '--from-snapshot', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /VMKIT_SNAPSHOT_NOT_FOUND/);
    assert.equal(d.cli(['info', 'web1d']).code, 1, 'nothing left behind');
  });

  it('a disk-only snapshot of a running VM is taken live and restored only when stopped', () => {
    const snap = createSnapshot(['web1', 'live-disk', '--no-memory']);
    assert.equal(snap.withMemory, false);
    assert.equal(snap.vmState, null);
    const r = d.cli(['snapshot', 'restore', 'web1', 'live-disk']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /VMKIT_INSTANCE_RUNNING/);
    assert.match(r.stderr, /Hint: .*vmkit stop web1/);
    cli(['snapshot', 'delete', 'web1', 'live-disk']);
  });

  it('suspend saves the VM and start resumes it, faster than a cold boot', async () => {
    // Cold boot, measured on the same instance.
    cli(['stop', 'web1']);
    let t0 = Date.now();
    cli(['start', 'web1']);
    await waitForHttp(`http://127.0.0.1:${port}/status`, 60_000);
    const cold = Date.now() - t0;
    timings['cold boot to HTTP'] = cold;

    const before = await guestStatus(port);
    const pid = d.cliJson<InstanceJson>(['info', 'web1']).runtime.pid!;
    t0 = Date.now();
    cli(['suspend', 'web1']);
    timings.suspend = Date.now() - t0;
    const suspended = d.cliJson<InstanceJson>(['info', 'web1']);
    assert.equal(suspended.state, 'suspended');
    assert.equal(suspended.runtime.pid, undefined);
    assert.equal(processAlive(pid), false, 'QEMU exited');
    assert.equal(d.cliJson<SnapshotJson[]>(['snapshot', 'list', 'web1']).length, 1, 'the suspend state is not a user snapshot');

    t0 = Date.now();
    cli(['start', 'web1']);
    await waitForHttp(`http://127.0.0.1:${port}/status`, 60_000);
    const resumed = Date.now() - t0;
    timings['start after suspend to HTTP'] = resumed;
    const after = await guestStatus(port);
    assert.equal(after.bootCount, before.bootCount, 'not a reboot');
    assert.ok(after.uptime >= before.uptime, `uptime continues (${before.uptime} -> ${after.uptime})`);
    assert.ok(after.counter >= before.counter, `in-memory counter kept (${before.counter} -> ${after.counter})`);
    assert.ok(resumed < cold, `start after suspend (${resumed} ms) is faster than a cold boot (${cold} ms)`);
    console.log(`cold boot to HTTP ${cold} ms, start after suspend to HTTP ${resumed} ms`);
    // The suspend tag is gone once resumed.
    const disk = join(d.dir, 'instances', d.cliJson<InstanceJson>(['info', 'web1']).id, 'root.qcow2');
    assert.ok(!diskTags(disk).includes('vmkit-suspend'));

    // A suspended instance is not stopped by accident: only --force drops its saved state.
    cli(['suspend', 'web1']);
    assert.ok(diskTags(disk).includes('vmkit-suspend'));
    const refused = d.cli(['stop', 'web1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /VMKIT_INVALID_STATE/);
    assert.match(refused.stderr, /Hint: .*vmkit start web1.*--force/);
    cli(['stop', 'web1', '--force']);
    const stopped = d.cliJson<InstanceJson>(['info', 'web1']);
    assert.equal(stopped.state, 'stopped');
    assert.match(stopped.stateReason ?? '', /discarded/);
    assert.ok(!diskTags(disk).includes('vmkit-suspend'), 'the saved state is gone');

    // A saved state that cannot be loaded fails the start clearly and leaves a stopped instance.
    cli(['start', 'web1']);
    await waitForHttp(`http://127.0.0.1:${port}/status`);
    cli(['suspend', 'web1']);
    const rm = spawnSync('qemu-img', ['snapshot', '-d', 'vmkit-suspend', '--image-opts', `driver=qcow2,file.filename=${disk}`], { encoding: 'utf8' });
    assert.equal(rm.status, 0, rm.stderr);
    const failed = d.cli(['start', 'web1']);
    assert.equal(failed.code, 3, failed.stderr);
    assert.match(failed.stderr, /VMKIT_QMP_ERROR/);
    const after2 = d.cliJson<InstanceJson>(['info', 'web1']);
    assert.equal(after2.state, 'stopped');
    assert.match(after2.stateReason ?? '', /last start failed/);
  });

  it('a disk-only snapshot of a stopped VM brings back its disk', async () => {
    if (d.cliJson<InstanceJson>(['info', 'web1']).state !== 'stopped') cli(['stop', 'web1']);
    const snap = createSnapshot(['web1', 'stopped-disk']);
    assert.equal(snap.withMemory, false);
    cli(['start', 'web1']);
    await waitForHttp(`http://127.0.0.1:${port}/status`);
    writeGuestFile('web1', '/data/late', 'written-after');
    assert.equal(readGuestFile('web1', '/data/late'), 'written-after');
    cli(['stop', 'web1']);
    restore('stopped-disk');
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'stopped');
    cli(['start', 'web1']);
    await waitForHttp(`http://127.0.0.1:${port}/status`);
    assert.equal(readGuestFile('web1', '/data/late'), 'MISSING');
    assert.equal(readGuestFile('web1', '/data/mark'), 'A', 'older writes are still there');
  });

  it('a memory snapshot restored on a stopped VM starts it at that instant; a paused one comes back paused', async () => {
    cli(['stop', 'web1']);
    restore('before');
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'running');
    const st = await guestStatus(port);
    assert.equal(readGuestFile('web1', '/data/mark'), 'A');
    assert.ok(st.counter < 60, `counter from the snapshot, not a fresh boot count (${st.counter})`);

    cli(['pause', 'web1']);
    const p = createSnapshot(['web1', 'while-paused']);
    assert.equal(p.vmState, 'paused');
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'paused', 'still paused after the snapshot');
    cli(['resume', 'web1']);
    await guestStatus(port);
    restore('while-paused');
    assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'paused');
    cli(['resume', 'web1']);
    await guestStatus(port);
    cli(['snapshot', 'delete', 'web1', 'while-paused']);
  });

  it('bad input gets clear errors', () => {
    const expectError = (args: string[], code: string) => {
      const r = d.cli(args);
      assert.equal(r.code, 1, `vmkit ${args.join(' ')}: ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, new RegExp(code), r.stderr);
      assert.match(r.stderr, /Hint: /);
    };
    expectError(['snapshot', 'create', 'web1', 'before'], 'VMKIT_ALREADY_EXISTS');
    expectError(['snapshot', 'restore', 'web1', 'nope'], 'VMKIT_SNAPSHOT_NOT_FOUND');
    expectError(['snapshot', 'delete', 'web1', 'nope'], 'VMKIT_SNAPSHOT_NOT_FOUND');
    for (const bad of ['Bad', 'a_b', '../x', 'vmkit suspend', '-x-', 'vmkit-suspend']) {
      expectError(['snapshot', 'create', 'web1', '--', bad], 'VMKIT_NAME_INVALID');
    }
    expectError(['snapshot', 'create', 'ghost', 's1'], 'VMKIT_INSTANCE_NOT_FOUND');
    expectError(['snapshot', 'list', 'ghost'], 'VMKIT_INSTANCE_NOT_FOUND');
    expectError(['suspend', 'ghost'], 'VMKIT_INSTANCE_NOT_FOUND');
  });

  it('kill -9 of the daemon during a snapshot leaves no orphan tag or row', async () => {
    const id = d.cliJson<InstanceJson>(['info', 'web1']).id;
    const disk = join(d.dir, 'instances', id, 'root.qcow2');
    for (const [i, delayMs] of [0, 120, 300].entries()) {
      const name = `crash${i}`;
      const res = await d.api<{ type: string }>('POST', '/1.0/instances/web1/snapshots', { name });
      assert.equal(res.status, 202);
      await sleep(delayMs);
      await d.kill9();
      await d.restart();
      let info = d.cliJson<InstanceJson>(['info', 'web1']);
      if (info.state === 'paused') {
        cli(['resume', 'web1']);
        info = d.cliJson<InstanceJson>(['info', 'web1']);
      }
      assert.equal(info.state, 'running');
      const rows = d
        .cliJson<SnapshotJson[]>(['snapshot', 'list', 'web1'])
        .map((s) => s.name)
        .sort();
      const tags = diskTags(disk).sort();
      assert.deepEqual(tags, rows, `kill after ${delayMs} ms: tags and rows agree`);
      assert.ok(
        rows.every((r) => r === 'before' || r === 'stopped-disk' || /^crash\d$/.test(r)),
        rows.join(','),
      );
      // Either outcome is fine: the snapshot exists whole (listed, tagged) or not at all.
      console.log(`kill after ${delayMs} ms: ${name} ${rows.includes(name) ? 'kept' : 'absent'}`);
      await guestStatus(port);
    }
    // Suspend interrupted: the instance ends suspended (saved state kept) or running/paused
    // (saved state dropped), and either way it can be brought back.
    for (const delayMs of [0, 250]) {
      const res = await d.api<{ type: string }>('PUT', '/1.0/instances/web1/state', { action: 'suspend' });
      assert.equal(res.status, 202);
      await sleep(delayMs);
      await d.kill9();
      await sleep(300);
      await d.restart();
      const info = d.cliJson<InstanceJson>(['info', 'web1']);
      const tags = diskTags(disk);
      console.log(`suspend killed after ${delayMs} ms: ${info.state}`);
      assert.ok(['running', 'paused', 'suspended'].includes(info.state), info.state);
      assert.equal(tags.includes('vmkit-suspend'), info.state === 'suspended', `suspend tag iff suspended (${tags.join(',')})`);
      if (info.state === 'paused') cli(['resume', 'web1']);
      if (info.state === 'suspended') cli(['start', 'web1']);
      assert.equal(d.cliJson<InstanceJson>(['info', 'web1']).state, 'running');
      await guestStatus(port);
    }
    // And snapshots work after it all.
    createSnapshot(['web1', 'after-crash']);
    assert.ok(diskTags(disk).includes('after-crash'));
  });
});

/** Internal snapshot tags of a qcow2 (-U: the running QEMU holds the lock). */
function diskTags(file: string): string[] {
  const r = spawnSync('qemu-img', ['info', '-U', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return ((JSON.parse(r.stdout) as { snapshots?: Array<{ name: string }> }).snapshots ?? []).map((s) => s.name);
}
