import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VmkitError } from '../errors.js';
import { parseStack, templateKey } from './spec.js';
import { planChanges } from './plan.js';

/** The example, as the docs ship it (doc/examples/shop.yaml). */
const EXAMPLE = readFileSync(new URL('../../doc/examples/shop.yaml', import.meta.url), 'utf8');

function invalidAt(text: string | unknown): string {
  try {
    parseStack(text);
  } catch (err) {
    assert.ok(err instanceof VmkitError);
    assert.equal(err.code, 'VMKIT_STACK_INVALID');
    return String(err.details?.path);
  }
  assert.fail(`accepted ${JSON.stringify(text)}`);
}

describe('stack files', () => {
  it("parses the issue's example as written, defaults filled in", () => {
    const s = parseStack(EXAMPLE);
    assert.deepEqual(s, {
      name: 'shop',
      networks: [{ name: 'shopnet', mode: 'nat', subnet: '10.90.0.0/24' }],
      services: [
        {
          name: 'web',
          image: 'appliance',
          type: 'small',
          replicas: 3,
          networks: ['shopnet'],
          port: 8080,
          guestPort: 80,
          health: { http: '/status', intervalMs: 1000, failures: 3, timeoutMs: 1000 },
          update: { maxUnavailable: 0, maxSurge: 1, readyTimeoutMs: 300_000 },
        },
      ],
    });
    // JSON is YAML too, and the same stack parses to the same spec.
    assert.deepEqual(parseStack(JSON.stringify(parseStack(EXAMPLE))), s);
  });

  it('names the path of the bad field', () => {
    const cases: Array<[string, string]> = [
      [EXAMPLE.replace('replicas: 3', 'replicas: 3.5'), 'services[0].replicas'],
      [EXAMPLE.replace('replicas: 3', 'replicas: 1000'), 'services[0].replicas'],
      [EXAMPLE.replace('http: /status', 'http: status'), 'services[0].health.http'],
      [EXAMPLE.replace('failures: 3', 'failures: 0'), 'services[0].health.failures'],
      [EXAMPLE.replace('maxSurge: 1', 'maxSurge: 0'), 'services[0].update'],
      [EXAMPLE.replace('type: small', 'type: enormous'), 'services[0].type'],
      [EXAMPLE.replace('mode: nat', 'mode: bridged'), 'networks[0].mode'],
      [EXAMPLE.replace('name: shopnet', 'name: Shop_Net'), 'networks[0].name'],
      [EXAMPLE.replace('port: 8080 ', 'port: 80 '), 'services[0].port'],
      [EXAMPLE.replace('networks: [shopnet]', 'networks: [shopnet, shopnet]'), 'services[0].networks[1]'],
      [EXAMPLE.replace('networks: [shopnet]', 'networks: []'), 'services[0].networks'],
      [EXAMPLE.replace('guestPort: 80', 'guestPort: 80\n    typo: 1'), 'services[0].typo'],
      [EXAMPLE.replace('name: shop\n', 'name: shop\nextra: 1\n'), 'extra'],
      [EXAMPLE.replace('name: shop\n', ''), 'name'],
      [`${EXAMPLE}  - name: web\n    image: appliance\n`, 'services[1].name'],
      ['name: shop\nservices: []\n', 'services'],
      ['- just a list', ''],
    ];
    for (const [text, path] of cases) assert.equal(invalidAt(text), path, text);
  });

  it('reports YAML syntax errors with their line', () => {
    assert.throws(
      () => parseStack('name: shop\nservices: [\n'),
      (err: VmkitError) => err.code === 'VMKIT_STACK_INVALID' && /line \d+/.test(err.message),
    );
    assert.throws(
      () => parseStack('name: a\nname: b\nservices: []\n'),
      (err: VmkitError) => err.code === 'VMKIT_STACK_INVALID',
    );
  });

  it('plans: nothing for the same spec; scale, roll, port changes otherwise', () => {
    const a = parseStack(EXAMPLE);
    assert.deepEqual(planChanges(a, parseStack(EXAMPLE)), []);
    assert.deepEqual(planChanges(undefined, a), ['+ network shopnet (nat 10.90.0.0/24)', '+ service web: 3 replica(s) of appliance (small) on shopnet, port 127.0.0.1:8080 → 80']);
    const b = parseStack(EXAMPLE.replace('image: appliance', 'image: web:2').replace('replicas: 3', 'replicas: 5').replace('port: 8080', 'port: 8081'));
    assert.deepEqual(planChanges(a, b), [
      '~ service web: roll 5 replica(s) appliance → web:2 (maxSurge 1, maxUnavailable 0)',
      '~ service web: scale 3 → 5',
      '~ service web: port 8080 → 8081',
    ]);
    assert.notEqual(templateKey(a.services[0]!), templateKey(b.services[0]!));
    // Only the replica count changed: no roll.
    const c = parseStack(EXAMPLE.replace('replicas: 3', 'replicas: 2'));
    assert.equal(templateKey(a.services[0]!), templateKey(c.services[0]!));
    assert.deepEqual(planChanges(a, c), ['~ service web: scale 3 → 2 (newest removed first)']);
  });
});
