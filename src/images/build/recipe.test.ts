import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { describeStep, parseRecipe } from './recipe.js';
import { stepKey } from './builder.js';
import { nextVersion, splitVersion, versionsOf } from './versions.js';
import type { Image } from '../../domain/types.js';

function refused(text: string, path: string): void {
  assert.throws(
    () => parseRecipe(text),
    (err: { code?: string; details?: { path?: string }; hint?: string }) => {
      assert.equal(err.code, 'VMKIT_RECIPE_INVALID');
      assert.equal(err.details?.path, path);
      assert.ok(err.hint, 'a hint says what to do');
      return true;
    },
  );
}

describe('image build recipes', () => {
  it('parses a base image, copy/run/cloud-init steps, size and disk', () => {
    const r = parseRecipe(`name: web
base: appliance:2
description: the shop
size: { cpus: 2, memoryMiB: 512 }
disk: 2G
steps:
  - copy: { src: ./site/, dest: /srv/www, mode: "0755" }
  - run: |
      echo hi > /etc/motd
    timeout: 60
  - cloud-init: |
      #cloud-config
      packages: [nginx]
`);
    assert.equal(r.name, 'web');
    assert.deepEqual(r.base, { image: 'appliance:2' });
    assert.deepEqual(r.size, { cpus: 2, memoryMiB: 512 });
    assert.equal(r.diskBytes, 2 * 1024 ** 3);
    assert.deepEqual(r.steps[0], { kind: 'copy', src: 'site', dest: '/srv/www', mode: 0o755 });
    assert.deepEqual(r.steps[1], { kind: 'run', command: 'echo hi > /etc/motd\n', timeoutSeconds: 60 });
    assert.equal(r.steps[2]!.kind, 'cloud-init');
    assert.equal(describeStep(r.steps[0]!), 'copy site → /srv/www');
    assert.deepEqual(parseRecipe('name: d\nbase: { debian: bookworm }\n').base, { debian: 'bookworm' });
  });

  it('refuses bad fields with the path of the field', () => {
    refused('base: appliance\n', 'name');
    refused('name: Web\nbase: appliance\n', 'name');
    refused('name: web:2\nbase: appliance\n', 'name');
    refused('name: web\n', 'base');
    refused('name: web\nbase: "a b"\n', 'base');
    refused('name: web\nbase: { debian: sid }\n', 'base.debian');
    refused('name: web\nbase: appliance\ncolour: red\n', 'colour');
    refused('name: web\nbase: appliance\nsteps: { run: x }\n', 'steps');
    refused('name: web\nbase: appliance\nsteps:\n  - run: x\n  - shell: y\n', 'steps[1]');
    refused('name: web\nbase: appliance\nsteps:\n  - run: x\n    copy: { src: a, dest: /b }\n', 'steps[0]');
    refused('name: web\nbase: appliance\nsteps:\n  - run: ""\n', 'steps[0].run');
    refused('name: web\nbase: appliance\nsteps:\n  - run: x\n    timeout: -1\n', 'steps[0].timeout');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: ../x, dest: /b }\n', 'steps[0].copy.src');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: /etc/passwd, dest: /b }\n', 'steps[0].copy.src');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: a, dest: relative }\n', 'steps[0].copy.dest');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: a, dest: /x/../y }\n', 'steps[0].copy.dest');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: a, dest: /b, mode: "rwx" }\n', 'steps[0].copy.mode');
    refused('name: web\nbase: appliance\nsteps:\n  - copy: { src: a, dest: /b, owner: root }\n', 'steps[0].copy.owner');
    refused('name: web\nbase: appliance\nsteps:\n  - cloud-init: "packages: [x]"\n', 'steps[0].cloud-init');
    refused('name: web\nbase: appliance\nsize: { cpus: 0 }\n', 'size.cpus');
    refused('name: web\nbase: appliance\ndisk: lots\n', 'disk');
    refused('name: web\nbase: [unclosed\n', '(yaml)');
    refused('name: web\nname: web2\nbase: appliance\n', '(yaml)');
    refused('- just\n- a list\n', '(recipe)');
  });

  it('keys a step by its parent, its content and its input bytes', () => {
    const run = { kind: 'run' as const, command: 'echo a' };
    const k = stepKey('p', run);
    assert.equal(stepKey('p', run), k, 'deterministic');
    assert.notEqual(stepKey('q', run), k, 'a changed parent changes every key after it');
    assert.notEqual(stepKey('p', { ...run, command: 'echo b' }), k);
    const copy = { kind: 'copy' as const, src: 'a', dest: '/a' };
    assert.notEqual(stepKey('p', copy, Buffer.from('1')), stepKey('p', copy, Buffer.from('2')), 'a changed file changes the key');
  });

  it('numbers versions: NAME:N, the next is one more than the newest', () => {
    const img = (name: string) => ({ name }) as Image;
    assert.deepEqual(splitVersion('web:12'), { name: 'web', version: 12 });
    assert.equal(splitVersion('web'), undefined);
    assert.equal(splitVersion('web:0'), undefined);
    assert.deepEqual(versionsOf(['web:1', 'web:10', 'web:2', 'webb:5', 'web'], 'web'), [10, 2, 1]);
    assert.equal(nextVersion([img('web:1'), img('web:3'), img('other:9')], 'web'), 4);
    assert.equal(nextVersion([img('web')], 'web'), 1);
  });
});
