import path from 'node:path';

/**
 * The benches' one command-line parser. Each option names its flag and what it holds; the
 * result has one property per option, with its default when the flag is absent. A bad value
 * or an unknown flag ends the bench with a message (exit 2); --help prints the usage.
 */
export type Option =
  /** `--flag N`: an integer >= min. */
  | { flag: string; kind: 'int'; min: number; default: number }
  /** `--flag 256,1024`: integers >= min. */
  | { flag: string; kind: 'ints'; min: number; default: number[] }
  /** `--flag a` where a is one of `values`. */
  | { flag: string; kind: 'choice'; values: readonly string[]; default: string }
  /** `--flag a,b`: each one of `values`. */
  | { flag: string; kind: 'choices'; values: readonly string[]; default: string[] }
  /** `--flag PATH` (made absolute) or `--flag TEXT`. */
  | { flag: string; kind: 'path' | 'string'; default: string }
  /** `--flag` alone: true (default false). */
  | { flag: string; kind: 'set' }
  /** `--flag` alone: false (default true), for `--skip-x` and `--no-x`. */
  | { flag: string; kind: 'clear' };

type ValueOf<O extends Option> = O extends { kind: 'int' }
  ? number
  : O extends { kind: 'ints' }
    ? number[]
    : O extends { kind: 'choices' }
      ? string[]
      : O extends { kind: 'set' | 'clear' }
        ? boolean
        : string;

export type Parsed<S extends Record<string, Option>> = { [K in keyof S]: ValueOf<S[K]> };

export function die(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

export function parseArgs<S extends Record<string, Option>>(usage: string, spec: S, argv: string[] = process.argv.slice(2)): Parsed<S> {
  const out: Record<string, unknown> = {};
  const byFlag = new Map<string, [string, Option]>();
  for (const [key, o] of Object.entries(spec)) {
    byFlag.set(o.flag, [key, o]);
    out[key] = o.kind === 'set' ? false : o.kind === 'clear' ? true : o.default;
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      console.log(`usage: ${usage}`);
      process.exit(0);
    }
    const found = byFlag.get(a);
    if (!found) die(`unknown option ${a} (see --help)`);
    const [key, o] = found;
    if (o.kind === 'set' || o.kind === 'clear') {
      out[key] = o.kind === 'set';
      continue;
    }
    const v = argv[++i];
    if (v === undefined) die(`${a} needs a value`);
    switch (o.kind) {
      case 'int': {
        const n = Number(v);
        if (!Number.isInteger(n) || n < o.min) die(`${a} needs an integer >= ${o.min}`);
        out[key] = n;
        break;
      }
      case 'ints': {
        const ns = v.split(',').map(Number);
        if (ns.some((n) => !Number.isInteger(n) || n < o.min)) die(`${a} is a list of integers >= ${o.min}, e.g. ${o.default.join(',')}`);
        out[key] = ns;
        break;
      }
      case 'choice':
        if (!o.values.includes(v)) die(`${a} is one of ${o.values.join(', ')}`);
        out[key] = v;
        break;
      case 'choices': {
        const vs = v.split(',');
        if (vs.some((x) => !o.values.includes(x))) die(`${a} is a list of ${o.values.join(',')}`);
        out[key] = vs;
        break;
      }
      case 'path':
        out[key] = path.resolve(v);
        break;
      case 'string':
        out[key] = v;
        break;
    }
  }
  return out as Parsed<S>;
}
