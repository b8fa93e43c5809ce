/**
 * Architecture rules, checked on the import statements of every src/**\/*.ts file (static
 * `import`/`export … from` and dynamic `import()`, type-only imports included: a type import
 * is still a dependency a reader has to follow).
 *
 * 1. api-is-a-skin: nothing outside src/api/ imports from src/api/, except src/daemon.ts
 *    (which builds the API). Inside src/api/ the OpenAPI generator and the test helpers are
 *    ordinary api files, so they need no exception.
 * 2. domain-is-pure: src/domain/ imports nothing but src/domain/, src/wire/ and src/errors.ts.
 *    (src/wire/ holds the wire types the domain names; rule 7 keeps it as pure as the domain,
 *    with one package: the schema builder the types are derived from.)
 * 3. api-through-services: src/api/ does not import src/qemu/, src/storage/ or src/store/
 *    directly; it goes through services. Exception: test files (*.test.ts) and
 *    src/api/test-context.test-support.ts are composition roots (like daemon.ts): they build a
 *    real store to hand to the services under test.
 * 4. cli-is-a-client: src/cli/ imports only src/cli/, src/domain/, src/errors.ts, the wire
 *    types of other folders (a folder's types.ts), src/wire/ (the wire types themselves) and
 *    src/client/ (the one API client, which rule 8 keeps free of daemon code). Adjusted, because it cannot hold today:
 *    src/cli/daemon.ts lazily loads src/daemon.ts — `vmkit daemon` IS the daemon's launcher
 *    (bin/vmkit.js loads the CLI only), and loading it lazily is what keeps every other
 *    command free of daemon code; no other cli file may do so.
 * 5. no-folder-cycles: no import cycle between the top-level folders of src/ (files directly
 *    in src/ count as a folder each). Test-only modules are left out of this rule: nothing imports a
 *    test, so a test's imports cannot close a cycle in the code that ships.
 * 6. no-api-file-cycles: no import cycle between the files of src/api/ (server.ts registers
 *    the routes-*.ts files; they take ApiContext from context.ts, never from server.ts).
 * 7. wire-is-portable: src/wire/ imports only src/wire/ and @sinclair/typebox — no node:
 *    module, no other package, no other folder — because the web console compiles and
 *    bundles it too (web/tsconfig.json includes it).
 * 8. client-is-a-client: src/client/ imports only src/client/, src/wire/, src/errors.ts and
 *    node: modules. The CLI and the cluster's peer calls share it, so it must not pull in
 *    daemon code (which rule 4 would then let into the CLI through the back door).
 * 9. tests-stay-out-of-dist: test-only modules are the tests (*.test.ts) and what only tests
 *    use (fakes, contracts: *.test-support.ts). No other module imports one, and
 *    tsconfig.json leaves both out, so the shipped dist/ holds none (tsconfig.unit.json
 *    compiles them to dist-unit/).
 *
 * A failure names the rule, the file and the import.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

// This file runs compiled from dist/; the rules are about the sources.
const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

interface Import {
  /** Importing file, relative to src/, posix separators. */
  from: string;
  /** Imported file, relative to src/ (.ts), or undefined for a package / node: module. */
  to: string | undefined;
  /** The specifier as written. */
  spec: string;
  line: number;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (e.endsWith('.ts') && !e.endsWith('.d.ts')) out.push(p);
  }
  return out.sort();
}

function rel(p: string): string {
  return relative(SRC, p).split(sep).join('/');
}

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const info = ts.preProcessFile(text, true, true);
  const from = rel(file);
  return info.importedFiles.map((f) => {
    const line = text.slice(0, f.pos).split('\n').length;
    let to: string | undefined;
    if (f.fileName.startsWith('.')) {
      // Relative imports name the compiled .js; the source is the .ts beside it.
      to = posix.normalize(posix.join(posix.dirname(from), f.fileName)).replace(/\.js$/, '.ts');
    }
    return { from, to, spec: f.fileName, line };
  });
}

/** Top-level folder of a src-relative path ('api', 'cli', …); files in src/ are their own. */
function area(p: string): string {
  const i = p.indexOf('/');
  return i < 0 ? p : p.slice(0, i);
}

const isTest = (p: string): boolean => p.endsWith('.test.ts');
const isTestOnly = (p: string): boolean => isTest(p) || p.endsWith('.test-support.ts');
const show = (i: Import): string => `src/${i.from}:${i.line} imports '${i.spec}'`;

const imports = sourceFiles(SRC).flatMap(importsOf);
const internal = imports.filter((i): i is Import & { to: string } => i.to !== undefined);

test('architecture: the sources were found', () => {
  assert.ok(imports.length > 100, `only ${imports.length} imports found under ${SRC}`);
});

test('architecture: nothing outside src/api/ imports src/api/ (but daemon.ts)', () => {
  const bad = internal.filter((i) => area(i.to) === 'api' && area(i.from) !== 'api' && i.from !== 'daemon.ts');
  assert.deepEqual(bad.map(show), [], 'src/api/ is the outermost layer: move what is shared into a service');
});

test('architecture: src/domain/ imports only src/domain/, src/wire/ and src/errors.ts', () => {
  const bad = imports.filter(
    (i) => area(i.from) === 'domain' && !(i.to !== undefined && (area(i.to) === 'domain' || area(i.to) === 'wire' || i.to === 'errors.ts')) && !i.spec.startsWith('node:'),
  );
  assert.deepEqual(bad.map(show), [], 'the domain is plain data and rules, with no packages and no daemon code');
});

test('architecture: src/api/ does not import src/qemu/, src/storage/ or src/store/', () => {
  const roots = (p: string): boolean => isTest(p) || p === 'api/test-context.test-support.ts';
  const bad = internal.filter((i) => area(i.from) === 'api' && !roots(i.from) && ['qemu', 'storage', 'store'].includes(area(i.to)));
  assert.deepEqual(bad.map(show), [], 'routes call services; services own QEMU, storage and the store');
});

test('architecture: src/cli/ imports only cli, domain, errors, wire types and the client', () => {
  const allowed = (i: Import & { to: string }): boolean =>
    ['cli', 'domain', 'wire', 'client'].includes(area(i.to)) || i.to === 'errors.ts' || /^[^/]+\/types\.ts$/.test(i.to) || (i.from === 'cli/daemon.ts' && i.to === 'daemon.ts');
  const bad = internal.filter((i) => area(i.from) === 'cli' && !allowed(i));
  assert.deepEqual(bad.map(show), [], 'the CLI talks to the daemon over HTTP: import wire types (a types.ts), not daemon code');
});

test('architecture: src/wire/ imports only src/wire/ and @sinclair/typebox', () => {
  const bad = imports.filter((i) => area(i.from) === 'wire' && !(i.to !== undefined ? area(i.to) === 'wire' : i.spec === '@sinclair/typebox'));
  assert.deepEqual(bad.map(show), [], 'the web console bundles src/wire/: no Node module, no daemon code');
});

test('architecture: src/client/ imports only client, wire, errors and node: modules', () => {
  const bad = imports.filter(
    (i) => area(i.from) === 'client' && !(i.to !== undefined ? ['client', 'wire'].includes(area(i.to)) || i.to === 'errors.ts' : i.spec.startsWith('node:')),
  );
  assert.deepEqual(bad.map(show), [], 'the CLI loads the client: keep daemon code out of it');
});

test('architecture: only test-only modules import test-only modules (tests, *.test-support.ts)', () => {
  const bad = internal.filter((i) => isTestOnly(i.to) && !isTestOnly(i.from));
  assert.deepEqual(bad.map(show), [], 'a fake or test helper is not shipped code: name the module *.test-support.ts only if nothing else needs it');
});

test('architecture: tsconfig.json keeps test-only modules out of dist/', () => {
  // tsconfig files may hold comments; this one's exclude list is plain JSON.
  const config = JSON.parse(readFileSync(join(SRC, '..', 'tsconfig.json'), 'utf8')) as { exclude?: string[] };
  assert.deepEqual([...(config.exclude ?? [])].sort(), ['src/**/*.test-support.ts', 'src/**/*.test.ts']);
});

/** Cycles of a graph whose edges carry one import each (for the message); one per back edge. */
function findCycles(edges: Map<string, Map<string, Import>>): string[] {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of [...(edges.get(n)?.keys() ?? [])].sort()) {
      if (state.get(m) === 'open') {
        const path = [...stack.slice(stack.indexOf(m)), m];
        const via = path.slice(0, -1).map((p, k) => `    ${show(edges.get(p)!.get(path[k + 1]!)!)}`);
        cycles.push(`${path.join(' -> ')}\n${via.join('\n')}`);
      } else if (!state.has(m)) {
        visit(m);
      }
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of [...edges.keys()].sort()) if (!state.has(n)) visit(n);
  return cycles;
}

function graph(list: Array<Import & { to: string }>, node: (p: string) => string): Map<string, Map<string, Import>> {
  const edges = new Map<string, Map<string, Import>>();
  for (const i of list) {
    const a = node(i.from);
    const b = node(i.to);
    if (a === b) continue;
    if (!edges.has(a)) edges.set(a, new Map());
    if (!edges.get(a)!.has(b)) edges.get(a)!.set(b, i);
  }
  return edges;
}

test('architecture: no import cycle between top-level folders of src/', () => {
  const cycles = findCycles(
    graph(
      internal.filter((i) => !isTestOnly(i.from)),
      area,
    ),
  );
  assert.deepEqual(cycles, [], 'break the cycle: move the shared piece down, or pass it in');
});

test('architecture: no import cycle between the files of src/api/', () => {
  // server.ts registers the routes; the routes get what they call from context.ts.
  const cycles = findCycles(
    graph(
      internal.filter((i) => area(i.from) === 'api' && area(i.to) === 'api'),
      (p) => p,
    ),
  );
  assert.deepEqual(cycles, [], 'routes import context.ts, not server.ts');
});
