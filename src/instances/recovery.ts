import { mkdir, readdir, rm } from 'node:fs/promises';
import { canTransition, isActive } from '../domain/state.js';
import type { InstanceState } from '../domain/types.js';
import { connectToRunningQemu, findQemuProcess, processUid } from '../qemu/process.js';
import { acceleratorInUse, queryRunState, resumeGuest } from '../qemu/power.js';
import type { Provisioning } from './provision.js';
import { ConsoleLogCap, consoleLogLimits } from './console-log.js';
import { IO_ERROR_REASON, type InstanceContext, type Runtime } from './registry.js';

/** Instance folders recovery must not take for leftovers: those of quarantined rows. */
export interface KeptFolders {
  ids: ReadonlySet<string>;
  /** A quarantined instance row names no readable id: keep every folder without a row. */
  unknown: boolean;
}

/** What a daemon (re)start does for instances: QEMU processes that outlived it are re-attached. */
export class Recovery {
  constructor(
    private readonly shared: InstanceContext,
    private readonly provisioning: Provisioning,
  ) {}

  /**
   * After a daemon (re)start: re-attach to every QEMU still running, settle instances whose
   * process is gone, finish interrupted deletes and remove folders no row owns.
   */
  async recover(keep: KeptFolders = { ids: new Set(), unknown: false }): Promise<void> {
    const { registry, paths, events } = this.shared;
    await mkdir(paths.instances, { recursive: true });
    const rows = await registry.list();
    const ids = new Set(rows.map((r) => r.id));
    const orphans = (await readdir(paths.instances)).filter((entry) => !ids.has(entry) && !keep.ids.has(entry));
    if (keep.unknown && orphans.length > 0) {
      // A quarantined row whose id cannot be read may own any of them: nothing is removed.
      console.error(`vmkitd: instance folders without a row kept (a quarantined row may own them): ${orphans.join(', ')}`);
    } else {
      for (const entry of orphans) await rm(paths.instance(entry), { recursive: true, force: true });
    }
    for (const inst of rows) {
      if (inst.state === 'deleting') {
        await this.provisioning.finishDelete(inst);
        continue;
      }
      const runDir = paths.run(inst.id);
      const pid = await findQemuProcess(runDir, inst.id);
      if (!pid) {
        // Settled by the migration recovery (it knows whether the move finished).
        if (inst.state === 'migrating') continue;
        if (isActive(inst.state)) {
          await rm(runDir, { recursive: true, force: true });
          await registry.confinement.release(inst.id);
          await registry.setState(inst, 'stopped', 'QEMU ended while the daemon was not running');
          events.lifecycle('instance-stopped', inst.name, { reason: 'found stopped after daemon restart' });
        }
        continue;
      }
      try {
        const qmp = await connectToRunningQemu(runDir);
        const status = await queryRunState(qmp);
        const rt: Runtime = {
          pid,
          qmp,
          startedAtMs: inst.lastStartedAt ? Date.parse(inst.lastStartedAt) : Date.now(),
          expectExit: false,
          guestShutdown: false,
          accel: await acceleratorInUse(qmp),
          // The cgroup and uid it was started with are kept (read back from /proc).
          instanceId: inst.id,
          uid: await processUid(pid),
          cgroup: await registry.confinement.cgroupOf(pid),
        };
        // The console log stays capped for guests that kept running while no daemon watched.
        rt.consoleCap = new ConsoleLogCap(paths.consoleLog(inst.id), consoleLogLimits(this.shared.host.consoleLogMaxBytes)).start();
        registry.attach(inst.name, rt);
        // A start interrupted between launch and `cont` is finished; a stop interrupted
        // before QEMU ended is undone (the VM keeps running).
        if (inst.state === 'migrating') {
          // The migration code (src/cluster/migration.ts) decides: finish or undo.
          rt.ownRunState = true;
          continue;
        }
        if (status.status === 'prelaunch') await resumeGuest(qmp);
        // QEMU paused on a disk I/O error (werror=stop) says `io-error`, not `paused`.
        const ioError = status.status === 'io-error';
        const state: InstanceState = status.status === 'paused' || ioError ? 'paused' : 'running';
        const reason = ioError ? IO_ERROR_REASON : state === 'paused' && inst.state === 'paused' ? inst.stateReason : undefined;
        if (ioError) rt.ioError = { message: 'found paused on an I/O error at daemon start' };
        // A store that refuses the write (full disk) must not keep the daemon from starting.
        if (inst.state !== state || inst.stateReason !== reason) await registry.setStateFromEvent(inst, state, reason);
      } catch (err) {
        const reason = `cannot re-attach to QEMU pid ${pid}: ${(err as Error).message}`;
        // A row the state machine does not let fail (a QEMU found for a stopped instance) is
        // left as it is: one odd instance must not keep the daemon from starting.
        if (canTransition(inst.state, 'error')) await registry.setState(inst, 'error', reason);
        else console.error(`vmkitd: instance ${inst.name} is ${inst.state}, ${reason}`);
      }
    }
  }
}
