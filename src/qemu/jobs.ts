import { randomBytes } from 'node:crypto';
import { vmkitError } from '../errors.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** QEMU's jobs for internal snapshots (checkpoints and suspend) take long on big guests. */
export const JOB_TIMEOUT_MS = 300_000;
/** The block node of an instance's root disk (argv.ts names each disk's node after the disk: `root`). */
export const ROOT_NODE = 'root';

interface QmpJobInfo {
  id: string;
  type: string;
  status: string;
  error?: string;
}

/**
 * Runs a QMP job (snapshot-save/-load/-delete) to its end: subscribe to JOB_STATUS_CHANGE
 * before starting it, wait for `concluded`, read its error from query-jobs, dismiss it.
 */
export async function runJob(qmp: QmpClient, command: string, args: Record<string, unknown>): Promise<void> {
  const jobId = `vmkit-${command}-${randomBytes(4).toString('hex')}`;
  const concluded = qmp.waitForEvent('JOB_STATUS_CHANGE', {
    timeoutMs: JOB_TIMEOUT_MS,
    predicate: (e) => e.data.id === jobId && e.data.status === 'concluded',
  });
  // Awaited below; when the command itself is refused nobody awaits it, and its later
  // timeout must not become an unhandled rejection.
  concluded.catch(() => undefined);
  await qmp.execute(command, { 'job-id': jobId, ...args });
  await concluded;
  const jobs = await qmp.execute<QmpJobInfo[]>('query-jobs');
  const job = jobs.find((j) => j.id === jobId);
  // The outcome is read already; a job left undismissed only lingers in query-jobs (settleJobs clears it).
  await qmp.execute('job-dismiss', { id: jobId }).catch(() => undefined);
  if (job?.error) {
    throw vmkitError('VMKIT_QMP_ERROR', `QEMU ${command} of "${String(args.tag)}" failed: ${job.error}`, {
      hint: 'The instance is unchanged where QEMU could undo the step; "vmkit info" shows its state.',
    });
  }
}

/**
 * snapshot-save; resolves with how long the guest was paused. QEMU stops the vCPUs for the
 * save and restarts them when they were running (STOP/RESUME events, timestamped by QEMU).
 */
export async function saveVm(qmp: QmpClient, tag: string, alreadyPaused: boolean): Promise<number> {
  let stopAt: number | undefined;
  let resumeAt: number | undefined;
  const ts = (e: QmpEvent) => e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
  const onEvent = (e: QmpEvent) => {
    if (e.event === 'STOP' && stopAt === undefined) stopAt = ts(e);
    if (e.event === 'RESUME') resumeAt = ts(e);
  };
  qmp.on('event', onEvent);
  const t0 = Date.now();
  try {
    await runJob(qmp, 'snapshot-save', { tag, vmstate: ROOT_NODE, devices: [ROOT_NODE] });
  } finally {
    qmp.off('event', onEvent);
  }
  if (alreadyPaused || stopAt === undefined || resumeAt === undefined) return Date.now() - t0;
  return Math.round(resumeAt - stopAt);
}

/** Waits for jobs left over by a crashed daemon to end, and dismisses them. */
export async function settleJobs(qmp: QmpClient): Promise<void> {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    const jobs = await qmp.execute<QmpJobInfo[]>('query-jobs');
    const open = jobs.filter((j) => j.status !== 'concluded' && j.status !== 'null');
    for (const j of jobs.filter((j) => j.status === 'concluded')) {
      // Concluded is all we wait for: an undismissed job changes nothing, the next pass tries again.
      await qmp.execute('job-dismiss', { id: j.id }).catch(() => undefined);
    }
    if (open.length === 0 || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}
