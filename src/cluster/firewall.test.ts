import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderMigrationRuleset } from './firewall.js';

describe('migration firewall ruleset (golden)', () => {
  it('lets only the peer reach each migration port, over IPv4; ports in order', () => {
    const text = renderMigrationRuleset(
      new Map([
        [49_200, '10.9.0.2'],
        [38_111, '10.9.0.3'],
      ]),
    );
    assert.equal(
      text,
      `table inet vmkit-migration
delete table inet vmkit-migration
table inet vmkit-migration {
  chain input {
    type filter hook input priority -5; policy accept;
    tcp dport 38111 ip saddr != 10.9.0.3 drop
    tcp dport 38111 ip6 nexthdr tcp drop
    tcp dport 49200 ip saddr != 10.9.0.2 drop
    tcp dport 49200 ip6 nexthdr tcp drop
  }
}
`,
    );
  });

  it('with no port open, only removes the table (creating it first, so the delete never fails)', () => {
    assert.equal(renderMigrationRuleset(new Map()), 'table inet vmkit-migration\ndelete table inet vmkit-migration\n');
  });
});
