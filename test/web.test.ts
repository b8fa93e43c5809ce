import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { freePort, qemuPidsUnder, ROOT, sleep, startTestDaemon, tokenFile, waitForHttp, type TestDaemon } from './helpers.js';

/**
 * The web console in a real browser (Debian's chromium driven by playwright-core) against a
 * real daemon on TCP with a token, booting a real VM under TCG.
 */
const CHROMIUM = process.env.VMKIT_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');
const TOKEN = 'web-test-token-3f9c-0123456789abcdef0123';
const VM = 'webui1';

function ensureWebBuilt(): void {
  if (existsSync(join(ROOT, 'dist-web', 'index.html'))) return;
  const r = spawnSync('npm', ['run', 'build:web'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, `npm run build:web failed: ${r.stderr}${r.stdout}`);
}

/** Opens a WebSocket and says how the handshake ended: 'open' or the HTTP status. */
function wsHandshake(url: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      resolve('open');
      ws.close();
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(String(res.statusCode));
      res.resume();
      ws.terminate();
    });
    ws.on('error', (err) => resolve(`error: ${err.message}`));
  });
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** The text the serial console shows, one string per terminal row. */
async function terminalRows(page: Page): Promise<string[]> {
  return page.$$eval('[data-testid=serial-console] .xterm-rows > div', (rows) => rows.map((r) => (r.textContent ?? '').replace(/\u00a0/g, ' ')));
}

describe('web console in a real browser', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let port: number;
  let base: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const pageProblems: string[] = [];

  before(async () => {
    ensureWebBuilt();
    mkdirSync(ARTIFACTS, { recursive: true });
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // Plain HTTP on loopback (--insecure-http): the browser and fetch need no certificate
    // exceptions here; HTTPS and the Secure cookie are tested in auth-tls.test.ts.
    d = await startTestDaemon({ extraArgs: ['--listen', `127.0.0.1:${port}`, '--insecure-http', '--token-file', tokenFile(TOKEN)] });
    // The TCP listener comes up before the unix socket; it is ready here.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) pageProblems.push(m.text());
    });
    page.on('pageerror', (e) => pageProblems.push(`uncaught: ${e.message}`));
  });
  after(async () => {
    await browser?.close().catch(() => undefined);
    await d?.stop();
  });

  it('refuses the API, the event stream and the console WebSockets without the token', async () => {
    const list = await fetch(`${base}/1.0/instances`);
    assert.equal(list.status, 401);
    assert.equal(((await list.json()) as { error: { code: string } }).error.code, 'VMKIT_UNAUTHORIZED');
    const events = await fetch(`${base}/1.0/events`);
    assert.equal(events.status, 401);
    await events.body?.cancel();
    assert.equal((await fetch(`${base}/1.0/instances`, { headers: { cookie: 'vmkit_session=forged' } })).status, 401);
    assert.equal(
      (await fetch(`${base}/1.0/auth/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: 'wrong' }) })).status,
      401,
    );
    const wsBase = `ws://127.0.0.1:${port}/1.0/instances/${VM}`;
    assert.equal(await wsHandshake(`${wsBase}/console`), '401');
    assert.equal(await wsHandshake(`${wsBase}/vnc`), '401');
    assert.equal(await wsHandshake(`${wsBase}/console`, { cookie: 'vmkit_session=forged' }), '401');
    // With the token the same handshake gets through (and then reports the missing instance).
    assert.equal(await wsHandshake(`${wsBase}/console`, { authorization: `Bearer ${TOKEN}` }), 'open');
    // The app's files load without a token: they hold no data.
    const index = await fetch(`${base}/ui/`);
    assert.equal(index.status, 200);
    assert.match(await index.text(), /<div id="root">/);
  });

  it('signs in with the token', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('[data-testid=signin-form]');
    await shot(page, '01-sign-in');
    await page.fill('input[name=token]', 'not-the-token');
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=error]');
    assert.match((await page.textContent('[data-testid=error]')) ?? '', /token is wrong/);
    await page.fill('input[name=token]', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=live].on');
    assert.match(page.url(), /\/ui\/#?\/?/);
    // The session is an HttpOnly cookie scoped to the API.
    const cookies = await context.cookies(`${base}/1.0/instances`);
    const session = cookies.find((c) => c.name === 'vmkit_session');
    assert.ok(session, 'session cookie set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
  });

  it('checks the create form before submitting and says server errors in words', async () => {
    await page.click('[data-testid=new-instance]');
    await page.waitForSelector('[data-testid=create-form]');
    await page.fill('input[name=name]', 'Bad_Name');
    await page.click('[data-testid=create-submit]');
    assert.match((await page.textContent('.field.invalid .problem')) ?? '', /lowercase/);
    await page.fill('input[name=name]', '-web');
    assert.match((await page.textContent('.field.invalid .problem')) ?? '', /Start and end/);
    // A forward to a port this machine already uses: only the server can know.
    await page.fill('input[name=name]', 'webbad');
    await page.click('text=Add a forward');
    await page.fill('input[name=hostPort0]', String(port));
    await page.click('[data-testid=create-submit]');
    await page.waitForSelector('[data-testid=error]');
    const text = (await page.textContent('[data-testid=error]')) ?? '';
    assert.match(text, /already uses that host port|already forwarded/, text);
    await shot(page, '02-create-error');
    await page.click('button[aria-label="Remove forward"]');
  });

  it('creates an instance from the appliance and sees it reach running without a reload', async () => {
    await page.evaluate('window.__noReload = true');
    await page.fill('input[name=name]', VM);
    await page.selectOption('select[name=image]', 'appliance');
    await page.selectOption('select[name=type]', 'small');
    await shot(page, '03-create-form');
    await page.click('[data-testid=create-submit]');
    await page.waitForSelector(`tr[data-instance=${VM}]`);
    await page.waitForSelector(`tr[data-instance=${VM}] [data-testid=state]:text-is("running")`, { timeout: 180_000 });
    assert.equal(await page.evaluate('window.__noReload'), true, 'the page was not reloaded');
    const row = (await page.textContent(`tr[data-instance=${VM}]`)) ?? '';
    assert.match(row, /appliance/);
    assert.match(row, /256 MiB/);
    await shot(page, '04-instances');
  });

  it('types a command on the serial console and reads its answer', async () => {
    await page.click(`tr[data-instance=${VM}] a.name`);
    await page.click('[data-tab=console]');
    await page.waitForSelector('[data-testid=serial-status]:text-is("connected")');
    await page.click('[data-testid=serial-console]');
    // The guest may still be booting: ask again until the shell answers.
    const deadline = Date.now() + 120_000;
    let rows: string[] = [];
    let answered = false;
    while (!answered && Date.now() < deadline) {
      await page.keyboard.type('hostname');
      await page.keyboard.press('Enter');
      for (let i = 0; i < 20 && !answered; i++) {
        await sleep(250);
        rows = await terminalRows(page);
        answered = rows.some((r, j) => /# hostname\s*$/.test(r) && rows[j + 1]?.trim() === VM);
      }
    }
    assert.ok(answered, `no answer to hostname on the console:\n${rows.join('\n')}`);
    assert.ok(
      rows.some((r) => r.includes(`${VM}:/# `)),
      'the appliance prompt is shown',
    );
    // Freeze the guest's power-button watcher and make the guest agent's /sbin/shutdown a no-op
    // (until the next boot): a graceful stop then waits, through both of its ways, for the cancel test.
    await page.keyboard.type(
      "for p in /proc/[0-9]*; do grep -qs powerbtn $p/cmdline && kill -STOP ${p##*/}; done; printf '#!/bin/sh\\nexit 0\\n' > /tmp/no-shutdown; chmod 755 /tmp/no-shutdown; mount -o bind /tmp/no-shutdown /sbin/shutdown && echo frozen-$((6*7))",
    );
    await page.keyboard.press('Enter');
    const until = Date.now() + 15_000;
    while (!(await terminalRows(page)).some((r) => r.trim() === 'frozen-42') && Date.now() < until) await sleep(200);
    assert.ok(
      (await terminalRows(page)).some((r) => r.trim() === 'frozen-42'),
      'the guest ran the second command',
    );
    await shot(page, '05-serial-console');
  });

  it('shows a running operation with its progress bar and cancels it', async () => {
    await page.click('[data-tab=overview]');
    await page.click('.page-head [data-action=stop]');
    await page.click('[data-nav=operations]');
    const op = 'li.op[data-kind="instance.stop"]';
    await page.waitForSelector(`${op} .op-running`);
    await page.waitForSelector(`${op} [role=progressbar][aria-valuenow="20"]`);
    assert.match((await page.textContent('[data-testid=active-ops]')) ?? '', /1/);
    await shot(page, '06-operation-running');
    // Cancelling a graceful stop ends the wait for the guest: the daemon forces it off now
    // instead of after the 30 s timeout.
    const t0 = Date.now();
    await page.click(`${op} [data-action=cancel]`);
    await page.waitForSelector(`${op}:not(.status-running)`, { timeout: 20_000 });
    assert.ok(Date.now() - t0 < 15_000, 'the cancel cut the 30 s wait short');
    await page.click('[data-nav=instances]');
    await page.waitForSelector(`tr[data-instance=${VM}] [data-testid=state]:text-is("stopped")`);
    // Start it again from the list.
    await page.click(`tr[data-instance=${VM}] [data-action=start]`);
    await page.waitForSelector(`tr[data-instance=${VM}] [data-testid=state]:text-is("running")`, { timeout: 120_000 });
    await page.click(`tr[data-instance=${VM}] a.name`);
  });

  it('shows the graphical console over VNC', async () => {
    await page.click('[data-tab=screen]');
    await page.waitForSelector('[data-testid=vnc-status]:text-is("connected")');
    await page.waitForSelector('[data-testid=vnc-screen] canvas');
    await sleep(1000);
    await shot(page, '07-graphical-console');
  });

  it('adds a forward in the UI, reaches the guest through it; pause, resume, restart; removes the forward', async () => {
    const hostPort = await freePort();
    await page.click('[data-tab=forwards]');
    await page.fill('[data-testid=forward-form] input[name=hostPort]', String(hostPort));
    await page.fill('[data-testid=forward-form] input[name=guestPort]', '80');
    await page.click('[data-testid=forward-form] button[type=submit]');
    await page.waitForSelector(`tr[data-forward="${hostPort}"]`);
    const body = await waitForHttp(`http://127.0.0.1:${hostPort}/`, 60_000);
    assert.match(body, new RegExp(VM));
    await shot(page, '08-forwards');
    await page.click('[data-tab=overview]');
    await page.waitForSelector('dl.facts');
    assert.match((await page.textContent('dl.facts')) ?? '', new RegExp(`127\\.0\\.0\\.1:${hostPort}→80/tcp`));
    await shot(page, '09-overview');
    // Pause and resume from the instance page; the badge follows the events.
    await page.click('.page-head [data-action=pause]');
    await page.waitForSelector('.page-head [data-testid=state]:text-is("paused")');
    await page.click('.page-head [data-action=resume]');
    await page.waitForSelector('.page-head [data-testid=state]:text-is("running")');
    // Restart: the operation appears on the instance's page and ends in success.
    await page.click('.page-head [data-action=restart]');
    await page.waitForSelector('li.op[data-kind="instance.restart"] .op-success', { timeout: 90_000 });
    // Remove the forward again: the host port stops answering.
    await page.click('[data-tab=forwards]');
    await page.click(`tr[data-forward="${hostPort}"] [data-action=remove-forward]`);
    await page.waitForSelector(`tr[data-forward="${hostPort}"]`, { state: 'detached' });
    await assert.rejects(fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(1500) }));
  });

  it('takes a snapshot with memory, lists it, restores it and deletes it; suspends and resumes', async () => {
    await page.click('[data-tab=snapshots]');
    await page.waitForSelector('[data-testid=no-snapshots]');
    // The name follows the instance-name grammar, checked before anything is sent.
    await page.fill('input[name=snapshotName]', 'Snap_1');
    assert.match((await page.textContent('[data-testid=snapshot-form] .problem')) ?? '', /lowercase/);
    await page.fill('input[name=snapshotName]', 'snap1');
    assert.equal(await page.isChecked('[data-testid=snapshot-form] input[name=memory]'), true, 'memory is on for a running instance');
    await page.click('[data-testid=snapshot-submit]');
    await page.waitForSelector('li.op[data-kind="snapshot.create"]');
    await page.waitForSelector('tr[data-snapshot=snap1]', { timeout: 120_000 });
    await page.waitForSelector('[data-testid=paused-time]');
    assert.match((await page.textContent('[data-testid=snapshot-result]')) ?? '', /paused for \d/);
    assert.match((await page.textContent('tr[data-snapshot=snap1]')) ?? '', /yes \(running\)/);
    await shot(page, '10-snapshots');
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${base}/ui/#/instances/${VM}/snapshots`);
    await phone.waitForSelector('tr[data-snapshot=snap1]');
    const width = (await phone.evaluate('document.documentElement.scrollWidth')) as number;
    assert.ok(width <= 390, `the snapshots tab fits a phone (${width}px)`);
    await phone.screenshot({ path: join(ARTIFACTS, '10-phone-snapshots.png') });
    await phone.close();
    // Clone the running instance from the snapshot: the new instance is listed; delete it.
    await page.click('tr[data-snapshot=snap1] [data-action=clone-snapshot]');
    await page.fill('[data-testid=clone-form] input[name=cloneName]', 'websnapclone');
    await page.click('[data-testid=clone-submit]');
    await page.waitForSelector('[data-testid=clone-done]', { timeout: 120_000 });
    await page.click('[data-testid=clone-close]');
    await page.click('[data-nav=instances]');
    const cloneRow = 'tr[data-instance=websnapclone]';
    await page.waitForSelector(`${cloneRow} [data-testid=state]:text-is("stopped")`);
    await page.click(`${cloneRow} [data-action=delete]`);
    await page.click('[data-testid=confirm]');
    await page.waitForSelector(cloneRow, { state: 'detached', timeout: 60_000 });
    await page.goto(`${base}/ui/#/instances/${VM}/snapshots`);
    await page.waitForSelector('tr[data-snapshot=snap1]');
    // Restore, after the confirmation: the guest is back at that instant, running.
    await page.click('tr[data-snapshot=snap1] [data-action=restore-snapshot]');
    await page.waitForSelector('[role=dialog]');
    await page.click('[data-testid=confirm]');
    await page.waitForSelector('li.op[data-kind="snapshot.restore"] .op-success', { timeout: 120_000 });
    await page.waitForSelector('.page-head [data-testid=state]:text-is("running")');
    // Delete it, after the confirmation.
    await page.click('tr[data-snapshot=snap1] [data-action=delete-snapshot]');
    await page.click('[data-testid=confirm]');
    await page.waitForSelector('li.op[data-kind="snapshot.delete"] .op-success', { timeout: 60_000 });
    await page.waitForSelector('[data-testid=no-snapshots]');
    // Suspend: the state goes to disk and QEMU ends; Start resumes from it.
    await page.click('.page-head [data-action=suspend]');
    await page.waitForSelector('.page-head [data-testid=state]:text-is("suspended")', { timeout: 120_000 });
    await page.click('.page-head [data-action=start]');
    await page.waitForSelector('.page-head [data-testid=state]:text-is("running")', { timeout: 120_000 });
  });

  it('shows the networks page (none here)', async () => {
    await page.click('[data-nav=networks]');
    await page.waitForSelector('[data-testid=no-networks]');
    assert.match((await page.textContent('[data-testid=no-networks]')) ?? '', /There are no networks/);
    // The create form checks the mode's needs before anything is sent (not submitted here:
    // creating a bridge needs privileges and network namespaces).
    await page.click('[data-testid=new-network]');
    await page.fill('[data-testid=network-form] input[name=networkName]', 'lan');
    await page.click('[data-testid=network-submit]');
    assert.match((await page.textContent('[data-testid=network-form] .problem')) ?? '', /needs a subnet/);
    await page.fill('[data-testid=network-form] input[name=subnet]', '10.80.0.1/24');
    assert.match((await page.textContent('[data-testid=network-form] .problem')) ?? '', /10\.80\.0\.0\/24/);
    await shot(page, '11-networks');
    // The detail view, fed a network with a lease, a NIC and a forward by the browser itself.
    const lan = {
      name: 'lan',
      mode: 'nat',
      bridge: 'vmkbr-lan',
      subnet: '10.80.0.0/24',
      hostAddress: '10.80.0.1',
      dhcp: true,
      dhcpRange: { start: '10.80.0.2', end: '10.80.0.254' },
      dns: true,
      createdAt: new Date().toISOString(),
      nics: [{ instance: VM, nic: 'eth1', mac: '52:54:00:12:34:56', model: 'virtio-net', ipv4: '10.80.0.2', tap: 'vmkt-1234567-1', state: 'up' }],
      leases: [{ expires: Math.floor(Date.now() / 1000) + 3600, mac: '52:54:00:12:34:56', ipv4: '10.80.0.2', hostname: VM }],
      forwards: [{ proto: 'tcp', hostAddress: '127.0.0.1', hostPort: 18080, guestPort: 80, nic: 'eth1', instance: VM, guestIp: '10.80.0.2' }],
    };
    await page.route('**/1.0/networks/lan', (r) => r.fulfill({ contentType: 'application/json', body: JSON.stringify({ type: 'sync', status_code: 200, metadata: lan }) }));
    await page.goto(`${base}/ui/#/networks/lan`);
    await page.waitForSelector('[data-testid=network-leases]');
    assert.match((await page.textContent('[data-testid=network-nics]')) ?? '', /vmkt-1234567-1/);
    assert.match((await page.textContent('[data-testid=network-forwards]')) ?? '', /127\.0\.0\.1:18080\s*10\.80\.0\.2:80/);
    await shot(page, '11-network-detail');
    await page.unroute('**/1.0/networks/lan');
  });

  it('shows operations with progress, images, and fits a phone screen', async () => {
    await page.click('[data-nav=operations]');
    await page.waitForSelector('li.op[data-kind="instance.launch"] .op-success');
    await shot(page, '12-operations');
    await page.click('[data-nav=instances]');
    await page.fill('input[type=search]', 'no-such-thing');
    await page.waitForSelector('text=Nothing matches the filter.');
    await page.fill('input[type=search]', 'appliance');
    await page.waitForSelector(`tr[data-instance=${VM}]`);
    await page.fill('input[type=search]', '');
    await page.click('[data-nav=images]');
    await page.waitForSelector('tr[data-image=appliance]');
    await shot(page, '13-images');
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${base}/ui/#/instances`);
    await phone.waitForSelector(`tr[data-instance=${VM}]`);
    const width = (await phone.evaluate('document.documentElement.scrollWidth')) as number;
    assert.ok(width <= 390, `no horizontal scrolling on a phone (page is ${width}px wide)`);
    await phone.screenshot({ path: join(ARTIFACTS, '14-phone-instances.png') });
    await phone.goto(`${base}/ui/#/instances/${VM}/overview`);
    await phone.waitForSelector('dl.facts');
    const detailWidth = (await phone.evaluate('document.documentElement.scrollWidth')) as number;
    assert.ok(detailWidth <= 390, `the instance page fits a phone (${detailWidth}px)`);
    await phone.screenshot({ path: join(ARTIFACTS, '14-phone-instance.png') });
    await phone.goto(`${base}/ui/#/instances/${VM}/console`);
    await phone.waitForSelector('[data-testid=serial-status]:text-is("connected")');
    await phone.screenshot({ path: join(ARTIFACTS, '14-phone-console.png') });
    await phone.close();
  });

  it('shows what the guest agent reports and runs a command for an operator', async () => {
    await page.goto(`${base}/ui/#/instances/${VM}/agent`);
    await page.waitForSelector('[data-testid=agent-status]');
    // The guest may have just been resumed: ask again until its agent answers.
    const deadline = Date.now() + 90_000;
    while ((await page.getAttribute('[data-testid=agent-status]', 'data-available')) !== 'yes' && Date.now() < deadline) {
      await sleep(2000);
      await page.click('[data-action=agent-refresh]');
    }
    assert.equal(await page.getAttribute('[data-testid=agent-status]', 'data-available'), 'yes', (await page.textContent('[data-testid=agent-status]')) ?? '');
    assert.equal((await page.textContent('[data-testid=agent-hostname]'))?.trim(), VM, 'the host name comes from the guest');
    assert.match((await page.textContent('[data-testid=agent-os]')) ?? '', /\d+\.\d+/, 'the kernel release (or the distribution) is shown');
    const mac = (await d.api<{ metadata: { nics: Array<{ mac: string }> } }>('GET', `/1.0/instances/${VM}`)).body.metadata.nics[0]!.mac;
    const itf = page.locator('[data-testid=agent-addresses] tr', { hasText: mac });
    assert.match((await itf.textContent()) ?? '', /10\.0\.2\.15/, 'the address the guest has on its user-mode NIC');
    // Run a command: exit code, standard output and standard error, each where it belongs.
    await page.fill('[data-testid=exec-form] input[name=command]', 'echo out-$((6*7)); hostname; echo err-$((5+5)) >&2; exit 3');
    await page.click('[data-testid=exec-submit]');
    await page.waitForSelector('[data-testid=exec-result]', { timeout: 60_000 });
    assert.equal((await page.textContent('[data-testid=exec-exit-code]'))?.trim(), '3');
    assert.equal((await page.textContent('[data-testid=exec-stdout]'))?.trim(), `out-42\n${VM}`);
    assert.equal((await page.textContent('[data-testid=exec-stderr]'))?.trim(), 'err-10');
    await shot(page, '14b-guest-agent');
    // The same API path with an operator token (not the admin one the page uses): allowed.
    const op = d.cli(['token', 'create', 'web-operator', '--role', 'operator']);
    assert.equal(op.code, 0, op.stderr);
    const r = await fetch(`${base}/1.0/instances/${VM}/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${op.stdout.trim()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['cat', '/proc/sys/kernel/hostname'] }),
    });
    assert.equal(r.status, 200);
    const answer = (await r.json()) as { metadata: { exitCode: number; stdout: string } };
    assert.equal(answer.metadata.exitCode, 0);
    assert.equal(Buffer.from(answer.metadata.stdout, 'base64').toString().trim(), VM);
  });

  it('shows a viewer the instance but no action it may not take; the daemon refuses them anyway', async () => {
    const made = d.cli(['token', 'create', 'web-viewer', '--role', 'viewer']);
    assert.equal(made.code, 0, made.stderr);
    const viewerContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const viewer = await viewerContext.newPage();
    viewer.setDefaultTimeout(30_000);
    try {
      await viewer.goto(`${base}/ui/`);
      await viewer.fill('input[name=token]', made.stdout.trim());
      await viewer.click('button[type=submit]');
      await viewer.waitForSelector('[data-testid=whoami][data-role=viewer]');
      assert.match((await viewer.textContent('[data-testid=whoami]')) ?? '', /web-viewer \(viewer\)/);
      await viewer.waitForSelector(`tr[data-instance=${VM}]`);
      await shot(viewer, '15a-viewer-instances');
      // The operator's page shows these on the same instance; the viewer's does not.
      await page.click('[data-nav=instances]');
      await page.waitForSelector(`tr[data-instance=${VM}] [data-action=delete]`); // the admin's page has them
      assert.equal(await viewer.locator('[data-testid=new-instance]').count(), 0);
      assert.equal(await viewer.locator(`tr[data-instance=${VM}] [data-action]`).count(), 0, 'no action buttons in the row');
      await viewer.goto(`${base}/ui/#/instances/${VM}`);
      await viewer.waitForSelector('[data-tab=overview]');
      assert.equal(await viewer.locator('.page-head [data-action]').count(), 0, 'no start/stop/delete/clone');
      assert.equal(await viewer.locator('[data-tab=console], [data-tab=screen]').count(), 0, 'no consoles');
      assert.ok(await viewer.isVisible('[data-tab=log]'), 'the log is readable');
      // What the agent reports is readable; the command box is not there.
      await viewer.click('[data-tab=agent]');
      await viewer.waitForSelector('[data-testid=agent-facts]');
      assert.equal(await viewer.locator('[data-testid=exec-form]').count(), 0, 'no Run command box');
      await viewer.click('[data-tab=forwards]');
      assert.equal(await viewer.locator('[data-testid=forward-form], [data-action=remove-forward]').count(), 0);
      await viewer.click('[data-tab=snapshots]');
      await viewer.waitForSelector('[data-testid=no-snapshots], [data-testid=snapshots]');
      assert.equal(await viewer.locator('[data-testid=snapshot-form]').count(), 0);
      await viewer.goto(`${base}/ui/#/create`);
      await viewer.waitForSelector('[data-testid=not-allowed]');
      await viewer.goto(`${base}/ui/#/images`);
      await viewer.waitForSelector('[data-testid=images]');
      assert.equal(await viewer.locator('[data-testid=upload-open]').count(), 0);
      await viewer.goto(`${base}/ui/#/networks`);
      await viewer.waitForSelector('h1:text-is("Networks")');
      assert.equal(await viewer.locator('[data-testid=new-network]').count(), 0);
      await shot(viewer, '15b-viewer-networks');
      // Hidden is not the guard: the daemon refuses the viewer's session cookie a stop.
      const status = await viewer.evaluate(async (name) => {
        const r = await fetch(`/1.0/instances/${name}/state`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action: 'stop' }) });
        return `${r.status} ${((await r.json()) as { error?: { code?: string } }).error?.code}`;
      }, VM);
      assert.equal(status, '403 VMKIT_FORBIDDEN');
      // Nor may the viewer run a command in the guest, by its session cookie or by its token.
      const exec = await viewer.evaluate(async (name) => {
        const r = await fetch(`/1.0/instances/${name}/exec`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ command: ['touch', '/tmp/viewer-was-here'] }),
        });
        return `${r.status} ${((await r.json()) as { error?: { code?: string } }).error?.code}`;
      }, VM);
      assert.equal(exec, '403 VMKIT_FORBIDDEN');
      const byToken = await fetch(`${base}/1.0/instances/${VM}/exec`, {
        method: 'POST',
        headers: { authorization: `Bearer ${made.stdout.trim()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ command: ['touch', '/tmp/viewer-was-here'] }),
      });
      assert.equal(byToken.status, 403);
      assert.equal(((await byToken.json()) as { error: { code: string } }).error.code, 'VMKIT_FORBIDDEN');
      assert.equal(d.cli(['exec', VM, '--', 'test', '-e', '/tmp/viewer-was-here']).code, 1, 'the refused command did not run');
      assert.equal((await d.api<{ metadata: { state: string } }>('GET', `/1.0/instances/${VM}`)).body.metadata.state, 'running');
    } finally {
      await viewerContext.close();
    }
  });

  it('deletes the instance after a confirmation', async () => {
    await page.click('[data-nav=instances]');
    await page.click(`tr[data-instance=${VM}] [data-action=delete]`);
    await page.waitForSelector('[role=dialog]');
    await shot(page, '15-delete-confirm');
    await page.click('[data-testid=confirm]');
    await page.waitForSelector(`tr[data-instance=${VM}]`, { state: 'detached', timeout: 60_000 });
    const deadline = Date.now() + 20_000;
    while (qemuPidsUnder(d.dir).length > 0 && Date.now() < deadline) await sleep(200);
    assert.deepEqual(qemuPidsUnder(d.dir), []);
    const list = await d.api<{ metadata: unknown[] }>('GET', '/1.0/instances');
    assert.deepEqual(list.body.metadata, []);
  });

  it('creates a stopped instance with explicit vCPUs and memory, from the images page', async () => {
    await page.click('[data-nav=images]');
    await page.click('tr[data-image=appliance] button');
    await page.waitForSelector('[data-testid=create-form]');
    assert.equal(await page.inputValue('select[name=image]'), 'appliance');
    await page.fill('input[name=name]', 'webui2');
    await page.check('input[name=sizing] >> nth=1');
    await page.fill('input[name=cpus]', '0');
    await page.fill('input[name=memory]', '32');
    await page.click('[data-testid=create-submit]');
    assert.match((await page.textContent('form')) ?? '', /Between 1 and 64 vCPUs/);
    assert.match((await page.textContent('form')) ?? '', /At least 64 MiB/);
    await page.fill('input[name=cpus]', '2');
    await page.fill('input[name=memory]', '512');
    await page.uncheck('input[name=start]');
    await page.click('[data-testid=create-submit]');
    const row = 'tr[data-instance=webui2]';
    await page.waitForSelector(`${row} [data-testid=state]:text-is("stopped")`);
    const text = (await page.textContent(row)) ?? '';
    assert.match(text, /appliance\s*2\s*512 MiB/);
    // Clone it (stopped: directly, linked); the name is checked as you type.
    await page.click(`${row} a.name`);
    await page.click('.page-head [data-action=clone]');
    const form = '[data-testid=clone-form]';
    await page.fill(`${form} input[name=cloneName]`, 'Web_Clone');
    assert.match((await page.textContent(`${form} .problem`)) ?? '', /lowercase/);
    await page.fill(`${form} input[name=cloneName]`, 'webui2');
    assert.match((await page.textContent(`${form} .problem`)) ?? '', /already an instance/);
    await page.fill(`${form} input[name=cloneName]`, 'webclone');
    assert.equal(await page.isChecked(`${form} input[name=full]`), false, 'linked by default');
    await page.click('[data-testid=clone-submit]');
    await page.waitForSelector('[data-testid=clone-op] li.op[data-kind="instance.clone"]');
    await page.waitForSelector('[data-testid=clone-done]', { timeout: 120_000 });
    await shot(page, '16-clone');
    await page.click('[data-testid=clone-close]');
    await page.click('[data-nav=instances]');
    const cloneRow = 'tr[data-instance=webclone]';
    await page.waitForSelector(`${cloneRow} [data-testid=state]:text-is("stopped")`);
    await page.click(`${cloneRow} [data-action=delete]`);
    await page.click('[data-testid=confirm]');
    await page.waitForSelector(cloneRow, { state: 'detached' });
    await page.click(`${row} [data-action=delete]`);
    await page.click('[data-testid=confirm]');
    await page.waitForSelector(row, { state: 'detached' });
  });

  it('uploads a qcow2 on the images page: upload progress, then the import operation', async () => {
    const file = join(d.dir, 'webdisk.qcow2');
    const made = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '32M'], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    await page.click('[data-nav=images]');
    // No repositories are configured here: the page says how to add one.
    await page.waitForSelector('[data-testid=no-repos]');
    await page.click('[data-testid=upload-open]');
    await page.setInputFiles('[data-testid=upload-form] input[type=file]', file);
    assert.equal(await page.inputValue('[data-testid=upload-form] input[name=imageName]'), 'webdisk', 'the name comes from the file');
    await page.fill('[data-testid=upload-form] input[name=imageName]', 'appliance');
    assert.match((await page.textContent('[data-testid=upload-form] .problem')) ?? '', /already an image/);
    await page.fill('[data-testid=upload-form] input[name=imageName]', 'webdisk');
    await page.selectOption('[data-testid=upload-form] select[name=diskFormat]', 'qcow2');
    await page.click('[data-testid=upload-submit]');
    await page.waitForSelector('[data-testid=upload-op] li.op[data-kind="image.import"] .op-success', { timeout: 60_000 });
    await page.waitForSelector('tr[data-image=webdisk]');
    assert.match((await page.textContent('tr[data-image=webdisk]')) ?? '', /qcow2, 32(\.0)? MiB/);
    await shot(page, '17-upload');
    const info = await d.api<{ metadata: { disks: Array<{ virtualSize: number }> } }>('GET', '/1.0/images/webdisk');
    assert.equal(info.body.metadata.disks[0]?.virtualSize, 32 * 1024 * 1024);
    assert.match((await page.textContent('tr[data-image=webdisk]')) ?? '', /Uploaded webdisk\.qcow2/);
    // Repositories (fed by the browser itself: none is configured here) with a Pull button; an
    // image that is here already says so; pulling from an unknown repository is said in words.
    const reply = (metadata: unknown) => ({ contentType: 'application/json', body: JSON.stringify({ type: 'sync', status_code: 200, metadata }) });
    await page.route('**/1.0/repos', (r) => r.fulfill(reply([{ name: 'hub', url: 'http://127.0.0.1:9/', token: false }])));
    await page.route('**/1.0/repos/hub/images', (r) =>
      r.fulfill(
        reply([
          { name: 'webdisk', version: '1' },
          { name: 'tiny', version: '2', description: 'a tiny disk', files: [{ size: 1048576 }] },
        ]),
      ),
    );
    await page.click('[data-nav=instances]');
    await page.click('[data-nav=images]');
    await page.waitForSelector('[data-repo=hub] tr[data-repo-image=tiny]');
    assert.equal((await page.textContent('[data-repo=hub] tr[data-repo-image=webdisk] [data-action=pull]'))?.trim(), 'Pulled');
    assert.match((await page.textContent('[data-repo=hub] tr[data-repo-image=tiny]')) ?? '', /a tiny disk\s*1(\.0)? MiB/);
    await page.click('[data-repo=hub] tr[data-repo-image=tiny] [data-action=pull]');
    await page.waitForSelector('[data-testid=error]');
    await shot(page, '18-repositories');
    await page.unroute('**/1.0/repos/hub/images');
    await page.unroute('**/1.0/repos');
  });

  it('survives a daemon restart: renews its session, or asks to sign in again after a reload', async () => {
    // The page still holds the token it signed in with: it trades it for a new cookie.
    await d.kill9();
    await d.restart();
    await page.waitForSelector('[data-testid=live].off');
    await page.waitForSelector('[data-testid=live].on', { timeout: 30_000 });
    // A reloaded page has no token in memory; after another restart its cookie is unknown.
    await page.reload();
    await page.waitForSelector('[data-testid=live].on');
    await d.kill9();
    await d.restart();
    await page.reload();
    await page.waitForSelector('[data-testid=signin-form]');
    await page.fill('input[name=token]', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-testid=live].on');
  });

  it('ran without uncaught errors or content-security-policy refusals in the page', () => {
    assert.deepEqual(pageProblems, []);
  });
});
