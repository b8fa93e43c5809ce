import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ConsoleLogCap, consoleLogLimits, DEFAULT_CONSOLE_LOG_MAX_BYTES, readConsoleLog, rotateConsoleLog } from './console-log.js';

function size(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

describe('the console log cap', () => {
  it('is 8 MiB by default: console.log is rotated past 3.5 MiB, 1 MiB is room for one check', () => {
    assert.equal(DEFAULT_CONSOLE_LOG_MAX_BYTES, 8 * 1024 * 1024);
    assert.deepEqual(consoleLogLimits(), { maxBytes: 8 * 1024 * 1024, rotateAt: 3.5 * 1024 * 1024 });
  });

  it('rotation keeps the newest bytes in console.log.1 and empties console.log in place (same inode)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-log-'));
    try {
      const file = join(dir, 'console.log');
      const limits = consoleLogLimits(64 * 1024);
      assert.equal(await rotateConsoleLog(file, limits), false, 'no file yet: nothing to do');
      const fd = openSync(file, 'a'); // QEMU's chardev: O_APPEND
      const ino = statSync(file).ino;
      writeSync(fd, 'a'.repeat(limits.rotateAt));
      assert.equal(await rotateConsoleLog(file, limits), false, 'at the limit: kept');
      writeSync(fd, 'b'.repeat(1000) + 'END1');
      assert.equal(await rotateConsoleLog(file, limits), true);
      assert.equal(size(file), 0);
      assert.equal(statSync(file).ino, ino, 'same file: QEMU keeps writing to it');
      const older = readFileSync(`${file}.1`, 'utf8');
      assert.equal(older.length, limits.rotateAt, 'console.log.1 holds at most rotateAt bytes');
      assert.ok(older.endsWith('b'.repeat(1000) + 'END1'), 'the newest bytes are the ones kept');
      writeSync(fd, 'after\n'); // appended at the new end, not at the old offset
      closeSync(fd);
      assert.equal(readFileSync(file, 'utf8'), 'after\n');
      const tail = await readConsoleLog(file, 10);
      assert.equal(tail, 'END1after\n', 'the tail spans both files');
      assert.ok((await readConsoleLog(file)).startsWith('aaaa'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a flood appended by another process never takes both files past the cap', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-log-'));
    const file = join(dir, 'console.log');
    const limits = consoleLogLimits(1024 * 1024);
    writeFileSync(file, '');
    const cap = new ConsoleLogCap(file, limits).start();
    // Another process appends like QEMU does (O_APPEND), 1 KiB per millisecond: ~1 MB/s, four
    // times what a TCG guest's `yes > /dev/ttyS0` gets through its serial port.
    const writer = spawn(process.execPath, [
      '-e',
      `const fs = require('fs'); const fd = fs.openSync(process.argv[1], 'a'); const chunk = 'y\\n'.repeat(512);
       const end = Date.now() + 3000; const t = setInterval(() => { fs.writeSync(fd, chunk); if (Date.now() > end) { clearInterval(t); fs.closeSync(fd); } }, 1);`,
      file,
    ]);
    try {
      let most = 0;
      let rotations = 0;
      let lastOld = 0;
      while (writer.exitCode === null) {
        const cur = size(file);
        const old = size(`${file}.1`);
        if (old !== lastOld) rotations++;
        lastOld = old;
        most = Math.max(most, cur + old);
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(writer.exitCode, 0);
      assert.ok(rotations > 0 && size(`${file}.1`) > 0, 'it rotated');
      assert.ok(most <= limits.maxBytes, `both files together stayed under the cap (most seen: ${most} of ${limits.maxBytes})`);
      const all = await readConsoleLog(file);
      assert.match(all.slice(-10), /^(y\n)+$/);
    } finally {
      writer.kill();
      cap.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
