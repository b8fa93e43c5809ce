import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuPidsUnder, sleep, startTestDaemon, type TestDaemon } from './helpers.js';
import { SerialSession } from '../dist/images/build/session.js';

interface BuiltImage {
  name: string;
  version: string;
  source: string;
  build?: { base: string; steps: Array<{ index: number; step: string; key: string; cached: boolean; seconds: number }>; seconds: number };
  users: { instances: string[] };
}

/**
 * `vmkit image build` with the built-in appliance as base (real QEMU build VMs): a recipe with
 * a file and a command makes NAME:1 whose instances have both; changing only the last step
 * rebuilds only that step (the first comes from the cache) into NAME:2, which NAME resolves to.
 */
describe('image build (recipe → NAME:N, step cache)', () => {
  let d: TestDaemon;
  let work: string;
  const recipe = (second: string) => `name: webb
base: appliance
description: built by the image-build test
steps:
  - copy: { src: files/hello.txt, dest: /srv/www/hello.txt, mode: "0640" }
  - run: |
      echo "${second}" > /etc/step2
      echo "step two ran: ${second}"
`;

  before(async () => {
    d = await startTestDaemon();
    work = mkdtempSync('/tmp/vmkit-buildt-');
    mkdirSync(join(work, 'files'));
    writeFileSync(join(work, 'files', 'hello.txt'), 'hello from a vmkit build\n');
  });
  after(async () => {
    for (const n of ['from1', 'from2']) d.cli(['delete', n, '--force']);
    await d.stop();
    rmSync(work, { recursive: true, force: true });
  });

  function build(file: string): { out: string; seconds: number } {
    const t0 = Date.now();
    const r = d.cli(['image', 'build', '-f', file], { timeoutMs: 900_000 });
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${d.log().slice(-3000)}`);
    console.log(`vmkit image build -f ${file}: ${seconds.toFixed(1)} s\n${r.stdout.replace(/^/gm, '  ')}`);
    return { out: r.stdout, seconds };
  }

  async function inGuest(instance: string, script: string): Promise<string> {
    const inst = d.cliJson<{ id: string }>(['info', instance]);
    const session = await SerialSession.open(join(d.dir, 'instances', inst.id, 'run', 'serial.sock'), 180_000);
    try {
      const r = await session.run(script, { timeoutMs: 60_000 });
      assert.equal(r.exit, 0, r.output);
      return r.output;
    } finally {
      session.close();
    }
  }

  function noLeftovers(): void {
    assert.deepEqual(
      readdirSync(join(d.dir, 'images')).filter((e) => e.startsWith('.tmp-')),
      [],
      'no temporary image folders',
    );
    const instances = d.cliJson<Array<{ name: string }>>(['list']).map((i) => i.name);
    assert.deepEqual(
      instances.filter((n) => n.startsWith('build-')),
      [],
      'no build VM left',
    );
    assert.deepEqual(
      readdirSync(join(d.dir, 'build-cache')).filter((f) => f.includes('.tmp-')),
      [],
      'no half-written cache files',
    );
  }

  it('builds NAME:1 from base + file + command; an instance of it has the file and the command’s effect', async () => {
    const file = join(work, 'recipe.yaml');
    writeFileSync(file, recipe('first'));
    const { out } = build(file);
    assert.match(out, /Image webb:1 built/);
    const img = d.cliJson<BuiltImage>(['image', 'info', 'webb:1']);
    assert.equal(img.source, 'build');
    assert.equal(img.version, '1');
    assert.deepEqual(
      img.build!.steps.map((s) => s.cached),
      [false, false],
    );
    const log = d.cli(['image', 'info', 'webb:1', '--log', '--recipe']);
    assert.equal(log.code, 0, log.stderr);
    assert.match(log.stdout, /step two ran: first/, 'the build log has the step output');
    assert.match(log.stdout, /dest: \/srv\/www\/hello\.txt/, 'the recipe is stored with the image');
    noLeftovers();

    const l = d.cli(['launch', 'webb', 'from1'], { timeoutMs: 180_000 });
    assert.equal(l.code, 0, l.stderr);
    assert.equal(d.cliJson<{ image: string }>(['info', 'from1']).image, 'webb:1', 'the instance records the exact version');
    const seen = await inGuest('from1', 'cat /srv/www/hello.txt; stat -c %a /srv/www/hello.txt; cat /etc/step2');
    assert.equal(seen.trim().split('\n').join('|'), 'hello from a vmkit build|640|first');
  });

  it('a rebuild after changing only the last step reuses the cached first step and publishes NAME:2', async () => {
    const file = join(work, 'recipe.yaml');
    const before1 = d.cliJson<BuiltImage>(['image', 'info', 'webb:1']);
    const firstKey = before1.build!.steps[0]!.key;
    const cached = join(d.dir, 'build-cache', `${firstKey}.qcow2`);
    const mtime = statSync(cached).mtimeMs;
    writeFileSync(file, recipe('second'));
    const { out, seconds } = build(file);
    assert.match(out, /Image webb:2 built/);
    assert.match(out, /1\. copy files\/hello\.txt → \/srv\/www\/hello\.txt\s+cached/);
    const img = d.cliJson<BuiltImage>(['image', 'info', 'webb:2']);
    assert.deepEqual(
      img.build!.steps.map((s) => s.cached),
      [true, false],
    );
    assert.equal(img.build!.steps[0]!.key, firstKey, 'same key for the unchanged step');
    assert.notEqual(img.build!.steps[1]!.key, before1.build!.steps[1]!.key);
    assert.equal(statSync(cached).mtimeMs, mtime, 'the cached step was not run again (its overlay is untouched)');
    console.log(
      `first build ${before1.build!.seconds.toFixed(1)} s (steps ${before1.build!.steps.map((s) => s.seconds.toFixed(1)).join(' + ')} s); rebuild ${img.build!.seconds.toFixed(1)} s (CLI ${seconds.toFixed(1)} s)`,
    );

    // NAME is the newest version; launch by NAME and by NAME:1 both work.
    assert.equal(d.cliJson<BuiltImage>(['image', 'info', 'webb']).name, 'webb:2');
    const list = d.cliJson<BuiltImage[]>(['image', 'list']).map((i) => i.name);
    assert.ok(list.includes('webb:1') && list.includes('webb:2'), list.join(','));
    const table = d.cli(['image', 'list']).stdout;
    assert.match(table, /^webb:2\s+2 \(webb\)/m, 'the table marks the version "webb" names');
    assert.match(table, /^webb:1\s+1\s/m);
    const l = d.cli(['launch', 'webb', 'from2'], { timeoutMs: 180_000 });
    assert.equal(l.code, 0, l.stderr);
    assert.equal(d.cliJson<{ image: string }>(['info', 'from2']).image, 'webb:2');
    const seen = await inGuest('from2', 'cat /srv/www/hello.txt; cat /etc/step2');
    assert.equal(seen.trim().split('\n').join('|'), 'hello from a vmkit build|second');

    // A version in use cannot be deleted; the bare name does not delete "the newest" by accident.
    const del = d.cli(['image', 'delete', 'webb:1']);
    assert.equal(del.code, 1);
    assert.match(del.stderr, /VMKIT_IMAGE_IN_USE/);
    const bare = d.cli(['image', 'delete', 'webb']);
    assert.equal(bare.code, 1);
    assert.match(bare.stderr, /webb:2/);
    noLeftovers();
  });

  it('build-cache: list shows the steps; prune never removes what a running build uses; after prune --all a build runs every step again', async () => {
    type Entry = { key: string; bytes: number; lastUsed: string; step?: string; image?: string; inUse: boolean };
    type Pruned = { removed: Array<{ key: string }>; kept: number };
    const list = () => d.cliJson<{ entries: Entry[]; bytes: number }>(['image', 'build-cache', 'list']);
    const qcows = () => readdirSync(join(d.dir, 'build-cache')).filter((f) => f.endsWith('.qcow2'));
    const webb2 = d.cliJson<BuiltImage>(['image', 'info', 'webb:2']);
    const before = list();
    assert.equal(before.entries.length, qcows().length, 'one entry per overlay');
    for (const st of webb2.build!.steps) {
      const e = before.entries.find((x) => x.key === st.key);
      assert.ok(e, `step ${st.index} of webb:2 is in the cache`);
      assert.equal(e.image, 'webb');
      assert.ok(e.bytes > 0 && !e.inUse && Date.parse(e.lastUsed) > Date.now() - 3_600_000, JSON.stringify(e));
    }
    assert.match(d.cli(['image', 'build-cache', 'list']).stdout, /copy files\/hello\.txt/);
    // Everything was used within the hour: --older-than 1h removes nothing.
    assert.deepEqual(d.cliJson<Pruned>(['image', 'build-cache', 'prune', '--older-than', '1h']).removed, []);

    // A build running its second step on the cached first one: prune --all leaves that chain.
    const held = join(work, 'held.yaml');
    writeFileSync(held, 'name: held\nbase: appliance\nsteps:\n  - copy: { src: files/hello.txt, dest: /srv/www/hello.txt, mode: "0640" }\n  - run: sleep 8\n');
    const first = webb2.build!.steps[0]!.key;
    const op = d.cliJson<{ id: string }>(['image', 'build', '-f', held, '--no-wait']);
    let running = false;
    for (let i = 0; i < 600 && !running; i++) {
      await sleep(250);
      running = /step 2\/2 run: sleep 8$/.test(d.cliJson<{ progress?: { phase?: string } }>(['operation', 'show', op.id]).progress?.phase ?? '');
    }
    assert.ok(running, 'the build reached its second step');
    assert.equal(list().entries.find((e) => e.key === first)?.inUse, true, 'the running build uses the first step');
    const during = d.cliJson<Pruned>(['image', 'build-cache', 'prune', '--all']);
    assert.ok(!during.removed.some((e) => e.key === first), 'the entry in use stays');
    assert.ok(during.removed.length >= 2, `the others go: ${JSON.stringify(during)}`);
    const w = d.cli(['operation', 'wait', op.id], { timeoutMs: 300_000 });
    assert.equal(w.code, 0, `${w.stderr}\n${d.log().slice(-3000)}`);
    assert.deepEqual(
      d.cliJson<BuiltImage>(['image', 'info', 'held']).build!.steps.map((x) => x.cached),
      [true, false],
    );
    assert.ok(
      list().entries.every((e) => !e.inUse),
      'released when the build ended',
    );

    // prune --all empties the cache; the next build of webb runs every step again.
    const all = d.cliJson<Pruned>(['image', 'build-cache', 'prune', '--all']);
    assert.ok(all.removed.some((e) => e.key === first));
    assert.equal(all.kept, 0);
    assert.deepEqual(qcows(), [], 'no overlay left');
    assert.deepEqual(list().entries, []);
    const file = join(work, 'recipe.yaml');
    writeFileSync(file, recipe('second'));
    const { out } = build(file);
    assert.doesNotMatch(out, /cached/, 'no step came from the cache');
    const img = d.cliJson<BuiltImage>(['image', 'info', 'webb']);
    assert.deepEqual(
      img.build!.steps.map((x) => x.cached),
      [false, false],
    );
    assert.equal(img.build!.steps[0]!.key, first, 'the same key, rebuilt');
    assert.equal(list().entries.length, 2);
    noLeftovers();
  });

  it('a bad recipe is refused with the path of the bad field, and nothing is left behind', () => {
    const cases: Array<[string, RegExp]> = [
      ['name: webb\nbase: appliance\nsteps:\n  - copy: { src: files/missing.txt, dest: /x }\n', /steps\[0\]\.copy\.src/],
      ['name: webb\nbase: appliance\nsteps:\n  - run: true\n    shell: bash\n', /steps\[0\]\.shell/],
      ['name: webb\nbase: appliance\nsteps:\n  - copy: { src: ../etc/passwd, dest: /x }\n', /steps\[0\]\.copy\.src/],
      ['name: webb\nbase: no-such-image\nsteps: []\n', /VMKIT_IMAGE_NOT_FOUND/],
      ['name: webb\nbase: [unclosed\n', /not valid YAML/],
    ];
    const images = d.cliJson<BuiltImage[]>(['image', 'list']).length;
    for (const [text, expect] of cases) {
      const file = join(work, 'bad.yaml');
      writeFileSync(file, text);
      const r = d.cli(['image', 'build', '-f', file]);
      assert.equal(r.code, 1, `${text}: ${r.stdout}`);
      assert.match(r.stderr, expect, r.stderr);
      assert.match(r.stderr, /Hint: /);
    }
    assert.equal(d.cliJson<BuiltImage[]>(['image', 'list']).length, images, 'no image appeared');
    noLeftovers();
  });

  it('a failing step reports its exit status and output, and cleans up; --keep-on-failure leaves the build VM to look at', async () => {
    const file = join(work, 'fail.yaml');
    writeFileSync(file, 'name: failing\nbase: appliance\nsteps:\n  - run: echo "about to fail"; touch /etc/failed-here; exit 3\n');
    const r = d.cli(['image', 'build', '-f', file], { timeoutMs: 600_000 });
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /VMKIT_BUILD_FAILED/);
    assert.match(r.stderr, /exit status 3/);
    assert.match(r.stderr, /about to fail/);
    assert.ok(!d.cliJson<BuiltImage[]>(['image', 'list']).some((i) => i.name.startsWith('failing')));
    noLeftovers();

    const k = d.cli(['image', 'build', '-f', file, '--keep-on-failure'], { timeoutMs: 600_000 });
    assert.equal(k.code, 1, k.stdout);
    const vm = /build VM (build-[0-9a-f]{8}) is left running/.exec(k.stderr)?.[1];
    assert.ok(vm, k.stderr);
    assert.equal(d.cliJson<{ state: string }>(['info', vm]).state, 'running');
    // The failed step's effect is there to inspect, through the VM's console.
    assert.equal((await inGuest(vm, 'ls /etc/failed-here')).trim(), '/etc/failed-here');
    assert.equal(d.cli(['delete', vm, '--force']).code, 0);
    noLeftovers();
  });

  it('copy steps need the recipe folder: a caller that cannot name it (remote) gets VMKIT_RECIPE_INVALID', async () => {
    const r = await d.api<{ error: { code: string; message: string; details?: { path?: string } } }>('POST', '/1.0/images/build', { recipe: recipe('x') });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'VMKIT_RECIPE_INVALID');
    assert.equal(r.body.error.details?.path, 'steps[0].copy.src');
  });

  it('a daemon killed mid-build removes the build VM at restart; a re-run resumes from the cached steps', async () => {
    const file = join(work, 'slow.yaml');
    writeFileSync(file, 'name: slow\nbase: appliance\nsteps:\n  - run: echo one > /etc/one\n  - run: sleep 600\n');
    const started = d.cli(['image', 'build', '-f', file, '--no-wait']);
    assert.equal(started.code, 0, started.stderr);
    // Wait until the second step runs (the first one's overlay is in the cache).
    let vm: string | undefined;
    for (let i = 0; i < 600 && !vm; i++) {
      await sleep(500);
      const ops = d.cliJson<Array<{ kind: string; progress?: { phase?: string } }>>(['operation', 'list']);
      if (ops.some((o) => o.kind === 'image.build' && /step 2\/2/.test(o.progress?.phase ?? ''))) {
        vm = d.cliJson<Array<{ name: string }>>(['list']).find((x) => x.name.startsWith('build-'))?.name;
      }
    }
    assert.ok(vm, 'the build reached its second step');
    await sleep(3000);
    const before = qemuPidsUnder(d.dir).length;
    await d.kill9();
    await d.restart();
    assert.ok(!d.cliJson<Array<{ name: string }>>(['list']).some((x) => x.name === vm), 'the build VM is gone');
    assert.equal(qemuPidsUnder(d.dir).length, before - 1, "the build VM's QEMU was stopped");
    assert.match(d.log(), /removed build VM build-/);
    noLeftovers();
    // Resumed: step 1 comes from the cache (its overlay was complete before the crash).
    writeFileSync(file, 'name: slow\nbase: appliance\nsteps:\n  - run: echo one > /etc/one\n  - run: echo two > /etc/two\n');
    const again = d.cli(['image', 'build', '-f', file], { timeoutMs: 600_000 });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /1\. run: echo one > \/etc\/one\s+cached/);
    assert.match(again.stdout, /Image slow:1 built/);
  });

  it('cancelling a build stops the running step and removes the build VM', async () => {
    const file = join(work, 'cancel.yaml');
    writeFileSync(file, 'name: cancelled\nbase: appliance\nsteps:\n  - run: sleep 600\n');
    const op = d.cliJson<{ id: string }>(['image', 'build', '-f', file, '--no-wait']);
    let running = false;
    for (let i = 0; i < 600 && !running; i++) {
      await sleep(500);
      const o = d.cliJson<{ progress?: { phase?: string } }>(['operation', 'show', op.id]);
      running = /step 1\/1 run: sleep 600$/.test(o.progress?.phase ?? '');
    }
    assert.ok(running, 'the step started');
    await sleep(2000);
    assert.equal(d.cli(['operation', 'cancel', op.id]).code, 0);
    const w = d.cli(['operation', 'wait', op.id], { timeoutMs: 180_000 });
    assert.equal(w.code, 1);
    assert.match(w.stderr, /VMKIT_OPERATION_CANCELLED/);
    assert.ok(!d.cliJson<BuiltImage[]>(['image', 'list']).some((i) => i.name.startsWith('cancelled')));
    noLeftovers();
  });
});
