import http from 'node:http';
import type { StackHealth } from '../wire/stack.js';

/**
 * One HTTP health check from the daemon to a replica's address on its network: a 2xx/3xx
 * answer within the timeout passes; anything else (refused, reset, timed out, 4xx/5xx) fails
 * with a short reason. No keep-alive: each check is a fresh connection, like a client's.
 */
export function checkHttp(ip: string, port: number, path: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (err: string | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(err);
    };
    const req = http.get({ host: ip, port, path, agent: false, headers: { 'user-agent': 'vmkit-health' } }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      finish(code >= 200 && code < 400 ? undefined : `HTTP ${code}`);
    });
    const timer = setTimeout(() => {
      finish(`no answer in ${timeoutMs} ms`);
      req.destroy();
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  });
}

export interface HealthState {
  /** Passed its last check, and has not failed `failures` in a row since. */
  healthy: boolean;
  /** Consecutive failed checks. */
  failures: number;
  lastError?: string;
}

/**
 * The health of one replica, checked every `intervalMs`. `onChange` is called when it
 * becomes healthy or unhealthy (one passed check makes it healthy; `failures` failed checks
 * in a row make it unhealthy).
 */
export class ReplicaProbe {
  readonly state: HealthState;
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly target: () => { ip?: string; port: number } | undefined,
    private readonly spec: StackHealth,
    private readonly onChange: (healthy: boolean) => void,
    initiallyHealthy: boolean,
  ) {
    this.state = { healthy: initiallyHealthy, failures: 0 };
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.once(), this.spec.intervalMs);
    this.timer.unref();
    void this.once();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The replica is known dead (QEMU ended): unhealthy at once, without waiting for checks. */
  markDead(reason: string): void {
    this.state.failures = Math.max(this.state.failures, this.spec.failures);
    this.state.lastError = reason;
    if (this.state.healthy) {
      this.state.healthy = false;
      this.onChange(false);
    }
  }

  private async once(): Promise<void> {
    if (this.running || !this.timer) return;
    this.running = true;
    try {
      const t = this.target();
      const err = t?.ip ? await checkHttp(t.ip, t.port, this.spec.http, this.spec.timeoutMs) : 'no address yet';
      if (!this.timer) return;
      if (err === undefined) {
        this.state.failures = 0;
        this.state.lastError = undefined;
        if (!this.state.healthy) {
          this.state.healthy = true;
          this.onChange(true);
        }
      } else {
        this.state.failures++;
        this.state.lastError = err;
        if (this.state.healthy && this.state.failures >= this.spec.failures) {
          this.state.healthy = false;
          this.onChange(false);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
