import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { vmkitError } from '../errors.js';
import { assertTransition, invalidState, isActive } from '../domain/state.js';
import type { InstanceState, InstanceView } from '../domain/types.js';
import type { OperationContext } from '../operations/operations.js';
import { configInstanceId, writeConfigDrive } from '../storage/config-drive.js';
import { buildQemuArgv, type QemuDisk } from '../qemu/argv.js';
import { launchQemu, waitForExit, isProcessAlive, processUid } from '../qemu/process.js';
import { pauseGuest, quitQemu, requestPowerdown, resumeGuest } from '../qemu/power.js';
import { assertHostPortFree } from '../network/forwards.js';
import { qemuRunsAsRoot, touch } from './confinement.js';
import { ensureNvram, findOvmf } from '../qemu/firmware.js';
import { TCG_TB_SIZE_MIB } from '../host/cgroups.js';
import type { InstanceContext, Runtime } from './registry.js';
import { ConsoleLogCap, consoleLogLimits, rotateConsoleLog } from './console-log.js';
import type { StartHooks, StopOptions } from './types.js';
import type { GuestAgent } from './agent.js';

const DEFAULT_STOP_TIMEOUT_S = 30;
/** The start of stateReason when a stop had to power the guest off (it ignored ACPI). */
export const FORCED_OFF_REASON = 'forced off';

/**
 * The power verbs of an instance: start (also the steps a suspend-resume, a snapshot restore
 * or a migration target add through StartHooks), stop, restart, pause, resume, and the quit
 * that ends a suspend. Every `…Locked` method expects the caller to hold the instance's lock.
 */
export class Lifecycle {
  constructor(
    private readonly shared: InstanceContext,
    private readonly agent?: GuestAgent,
  ) {}

  async start(name: string, ctx?: OperationContext): Promise<InstanceView> {
    return this.shared.registry.withLock(name, () => this.startLocked(name, ctx));
  }

  async startLocked(name: string, ctx?: OperationContext, hooks?: StartHooks): Promise<InstanceView> {
    const { registry, paths, images, host, events, peers } = this.shared;
    const inst = await registry.load(name);
    if (!hooks && inst.state === 'suspended' && peers.suspend) hooks = peers.suspend.resumeHooks(inst);
    if (inst.state === 'running' || inst.state === 'paused') {
      throw vmkitError('VMKIT_INSTANCE_RUNNING', `Instance "${name}" is already ${inst.state}.`, {
        hint: inst.state === 'paused' ? `Resume it with "vmkit resume ${name}".` : `Use "vmkit restart ${name}" to restart it.`,
      });
    }
    assertTransition(name, inst.state, 'starting', 'start');
    const image = await images.get(inst.image);
    for (const f of inst.forwards) await assertHostPortFree(f);
    const accel = await host.accel();
    const qemuBinary = host.qemuBinary();

    await registry.setState(inst, 'starting');
    events.lifecycle('instance-starting', name);
    const dir = paths.instance(inst.id);
    const runDir = paths.run(inst.id);
    try {
      ctx?.progress({ phase: 'preparing', percent: 10 });
      await rm(runDir, { recursive: true, force: true });
      await mkdir(runDir, { recursive: true, mode: 0o700 });
      // A log left past its limit by an earlier run is rotated before QEMU opens it again.
      await rotateConsoleLog(paths.consoleLog(inst.id), consoleLogLimits(host.consoleLogMaxBytes));
      await touch(paths.consoleLog(inst.id));
      const addressing: Record<string, { prefix: number; gateway?: string; dns?: string[] }> = {};
      for (const nic of inst.nics) {
        const a = nic.network !== 'user' && nic.ipv4 && !nic.dhcp ? await peers.networking?.addressing(nic.network) : undefined;
        if (a) addressing[nic.id] = a;
      }
      await writeConfigDrive(join(dir, 'cidata.img'), {
        instanceId: configInstanceId(inst.id, inst.cloudInit?.generation),
        identity: inst.id,
        hostname: inst.name,
        nics: inst.nics,
        addressing,
        cloudInit: inst.cloudInit,
      });
      await registry.confinement.ensureUid(inst);
      await peers.networking?.plug(inst);
      const disks: QemuDisk[] = inst.disks.map((d) => ({ id: d.name, file: registry.diskPath(inst, d), format: d.format }));
      disks.push({ id: 'cidata', file: join(dir, 'cidata.img'), format: 'raw', readOnly: true });
      // UEFI: OVMF's code (shared, read-only) + the instance's NVRAM, made at its first UEFI start.
      const ovmf = inst.firmware === 'uefi' ? await findOvmf() : undefined;
      const uefi = ovmf ? { code: ovmf.code, nvram: await ensureNvram(dir, ovmf) } : undefined;
      const kernel = image.boot ? images.file(image, image.boot.kernel) : undefined;
      const initrd = image.boot?.initrd ? images.file(image, image.boot.initrd) : undefined;
      const argv = buildQemuArgv({
        qemuBinary,
        name: inst.name,
        instanceId: inst.id,
        accel,
        cpus: inst.cpus,
        memoryMiB: inst.memoryMiB,
        kernel,
        initrd,
        cmdline: image.boot?.cmdline,
        display: image.display !== 'none',
        disks,
        nics: inst.nics,
        forwards: inst.forwards,
        taps: peers.networking?.taps(inst),
        runDir,
        consoleLog: paths.consoleLog(inst.id),
        startPaused: true,
        machine: inst.machine,
        uefi,
        // The cgroup's memory limit allows for a bounded translation cache (src/host/cgroups.ts).
        tbSizeMiB: qemuRunsAsRoot() ? undefined : TCG_TB_SIZE_MIB,
        extraArgs: hooks?.extraArgs,
      });
      // The guest's uid gets its files, a cgroup gets its limits (src/instances/confinement.ts).
      const confined = await registry.confinement.prepare(
        inst,
        accel,
        [...disks.filter((d) => !d.readOnly).map((d) => d.file), ...(uefi ? [uefi.nvram] : [])],
        [kernel, initrd, uefi?.code].filter((f): f is string => !!f),
      );
      ctx?.progress({ phase: 'starting QEMU', percent: 40 });
      const { pid, qmp } = await launchQemu(argv, runDir, undefined, confined.prefix);
      const rt: Runtime = {
        pid,
        qmp,
        startedAtMs: Date.now(),
        expectExit: false,
        guestShutdown: false,
        accel,
        instanceId: inst.id,
        uid: await processUid(pid),
        cgroup: confined.cgroup,
      };
      rt.consoleCap = new ConsoleLogCap(paths.consoleLog(inst.id), consoleLogLimits(host.consoleLogMaxBytes)).start();
      registry.attach(inst.name, rt);
      if (hooks?.beforeCont) {
        ctx?.progress({ phase: 'restoring saved state', percent: 60 });
        rt.ownRunState = true;
        await hooks.beforeCont(qmp, inst);
      }
      if (hooks?.finalState) {
        // A migration target: QEMU waits for the incoming state; the caller drives the rest.
        rt.ownRunState = true;
        await registry.setState(inst, hooks.finalState);
        return registry.view(inst);
      }
      ctx?.progress({ phase: 'booting', percent: 80 });
      if (!hooks?.leavePaused) await resumeGuest(qmp);
      rt.ownRunState = false;
      rt.startedAtMs = Date.now();
      inst.lastStartedAt = new Date().toISOString();
      await registry.setState(inst, hooks?.leavePaused ? 'paused' : 'running');
      await peers.networking?.announce(inst).catch((err: Error) => console.error(`vmkitd: floating addresses of ${name}: ${err.message}`));
      events.lifecycle('instance-started', name, { pid });
      if (hooks?.afterStart) {
        await hooks.afterStart(qmp, inst).catch((err: unknown) => {
          console.error(`vmkitd: after starting ${name}: ${(err as Error).message}`);
        });
      }
      // Resumed from saved state (suspend, restore): the guest's clock is behind.
      if (hooks?.beforeCont && !hooks.leavePaused) this.agent?.syncClock(name);
      return registry.view(await registry.load(name));
    } catch (err) {
      await registry.killRuntime(inst.name);
      await registry.confinement.release(inst.id);
      // The start's own failure is what the caller must see; a leftover run folder is cleared by the next start.
      await rm(runDir, { recursive: true, force: true }).catch(() => undefined);
      const fresh = await registry.load(name);
      await registry.setState(fresh, 'stopped', `last start failed: ${(err as Error).message}`);
      await peers.networking?.unplug(fresh).catch((e: Error) => console.error(`vmkitd: unplugging ${name} after a failed start: ${e.message}`));
      events.lifecycle('instance-stopped', name, { reason: 'start failed' });
      throw err;
    }
  }

  async stop(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    return this.shared.registry.withLock(name, () => this.stopLocked(name, opts, ctx));
  }

  async stopLocked(name: string, opts: StopOptions, ctx?: OperationContext): Promise<InstanceView> {
    const { registry, paths, events, peers } = this.shared;
    const inst = await registry.load(name);
    if (inst.state === 'suspended' && peers.suspend) {
      if (!opts.force) {
        throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is suspended: no QEMU runs, its state is saved on its disk.`, {
          hint: `Resume it with "vmkit start ${name}", or discard the saved state with "vmkit stop ${name} --force".`,
          details: { state: inst.state },
        });
      }
      await peers.suspend.discard(inst);
      await registry.setState(inst, 'stopped', 'its suspended state was discarded (stop --force)');
      events.lifecycle('instance-stopped', name, { forced: true });
      return registry.view(inst);
    }
    if (!isActive(inst.state)) {
      throw vmkitError('VMKIT_INVALID_STATE', `Instance "${name}" is not running (it is ${inst.state}).`, {
        hint: `Start it with "vmkit start ${name}".`,
      });
    }
    assertTransition(name, inst.state, 'stopping', 'stop');
    const rt = registry.runtime(inst);
    const previous = inst.state;
    await registry.setState(inst, 'stopping');
    events.lifecycle('instance-stopping', name, { force: !!opts.force });
    rt.expectExit = true;
    let forced = !!opts.force;
    let waitedS = 0;
    let stopVia: 'agent' | 'acpi' | 'agent+acpi' | undefined;
    try {
      if (!forced) {
        if (previous === 'paused') await resumeGuest(rt.qmp);
        const timeoutMs = (opts.timeout ?? DEFAULT_STOP_TIMEOUT_S) * 1000;
        const t0 = Date.now();
        let exited = false;
        // The guest agent first (guest-shutdown: an orderly OS shutdown even where ACPI is
        // ignored), then the ACPI power button if the guest is still up after half the time.
        // The agent session runs while the instance is `stopping`: it is asked directly.
        if (this.agent && (await this.agent.shutdownStopping(name))) {
          ctx?.progress({ phase: 'guest-shutdown sent to the guest agent', percent: 20 });
          stopVia = 'agent';
          exited = await waitForExitOrCancel(rt.pid, Math.max(1000, timeoutMs / 2 - (Date.now() - t0)), ctx);
        }
        if (!exited && !ctx?.signal.aborted) {
          ctx?.progress({ phase: 'ACPI power button pressed', percent: 40 });
          if (stopVia === undefined) stopVia = 'acpi';
          else stopVia = 'agent+acpi';
          await requestPowerdown(rt.qmp);
          exited = await waitForExitOrCancel(rt.pid, Math.max(0, timeoutMs - (Date.now() - t0)), ctx);
        }
        if (!exited) forced = true;
        waitedS = Math.round((Date.now() - t0) / 1000);
      }
      if (forced) {
        ctx?.progress({ phase: 'forcing', percent: 70 });
        // A quit that fails (QEMU hung) is followed by SIGKILL below.
        await quitQemu(rt.qmp).catch(() => undefined);
        if (!(await waitForExit(rt.pid, 3_000))) {
          process.kill(rt.pid, 'SIGKILL');
          await waitForExit(rt.pid, 5_000);
        }
      }
    } catch (err) {
      if (isProcessAlive(rt.pid) && registry.current(name) === rt) {
        rt.expectExit = false;
        const again = await registry.load(name);
        await registry.setState(again, previous);
        throw err;
      }
    }
    registry.forget(name);
    rt.qmp.close();
    await rm(paths.run(inst.id), { recursive: true, force: true });
    await registry.confinement.release(inst.id);
    const after = await registry.load(name);
    // The reason starts with FORCED_OFF_REASON: the CLI reports such a stop as not clean.
    await registry.setState(after, 'stopped', forced && !opts.force ? `${FORCED_OFF_REASON} after ${waitedS} s: the guest did not power off` : undefined);
    await peers.networking?.unplug(after).catch((err: Error) => console.error(`vmkitd: unplugging ${name}: ${err.message}`));
    events.lifecycle('instance-stopped', name, { forced, ...(stopVia ? { via: stopVia } : {}) });
    return registry.view(after);
  }

  /** QEMU's state was saved (suspend): end the process and leave the instance in `state`. */
  async quitLocked(name: string, state: InstanceState, reason?: string): Promise<void> {
    const { registry, paths, events } = this.shared;
    const inst = await registry.load(name);
    const rt = registry.runtime(inst);
    // Checked before QEMU is asked to quit, so a refused change touches nothing.
    assertTransition(name, inst.state, state, 'suspend');
    rt.expectExit = true;
    registry.forget(name);
    await quitQemu(rt.qmp);
    if (!(await waitForExit(rt.pid, 5_000))) {
      process.kill(rt.pid, 'SIGKILL');
      await waitForExit(rt.pid, 5_000);
    }
    rt.qmp.close();
    await rm(paths.run(inst.id), { recursive: true, force: true });
    await registry.confinement.release(inst.id);
    await registry.setState(inst, state, reason);
    events.lifecycle(state === 'suspended' ? 'instance-suspended' : 'instance-stopped', name);
  }

  async restart(name: string, opts: StopOptions = {}, ctx?: OperationContext): Promise<InstanceView> {
    const { registry } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      if (isActive(inst.state)) await this.stopLocked(name, opts, ctx);
      return this.startLocked(name, ctx);
    });
  }

  async pause(name: string): Promise<InstanceView> {
    const { registry, events } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      if (inst.state === 'paused') return registry.view(inst);
      // Only a running guest is paused by this verb (other states may end paused by other paths).
      if (inst.state !== 'running') throw invalidState(name, inst.state, 'pause');
      await pauseGuest(registry.runtime(inst).qmp);
      await registry.setState(inst, 'paused');
      events.lifecycle('instance-paused', name);
      return registry.view(inst);
    });
  }

  async resume(name: string): Promise<InstanceView> {
    const { registry, events } = this.shared;
    return registry.withLock(name, async () => {
      const inst = await registry.load(name);
      if (inst.state !== 'paused') {
        throw vmkitError('VMKIT_INVALID_STATE', `Cannot resume instance "${name}": it is ${inst.state}, not paused.`, {
          hint: inst.state === 'stopped' ? `Use "vmkit start ${name}".` : undefined,
        });
      }
      await resumeGuest(registry.runtime(inst).qmp);
      await registry.setState(inst, 'running');
      events.lifecycle('instance-resumed', name);
      // The guest's clock stood still while paused: the agent sets it (in the background).
      this.agent?.syncClock(name);
      return registry.view(inst);
    });
  }
}

async function waitForExitOrCancel(pid: number, timeoutMs: number, ctx?: OperationContext): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await waitForExit(pid, Math.min(250, deadline - Date.now()))) return true;
    if (ctx?.signal.aborted) return false;
  }
  return waitForExit(pid, 0);
}
