import Database from 'better-sqlite3';
import { compareFailed, type PutOptions, type Store, type StoreKind, type Versioned } from './store.js';

/** Schema migrations, applied in order; `user_version` records how far a database got. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE objects (
     kind TEXT NOT NULL,
     key TEXT NOT NULL,
     value TEXT NOT NULL,
     revision INTEGER NOT NULL,
     PRIMARY KEY (kind, key)
   ) WITHOUT ROWID;
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
   INSERT INTO counters VALUES ('revision', 0);`,
  // Rows that could not be used (damaged JSON, required fields missing), moved aside at start-up.
  `CREATE TABLE quarantine (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     kind TEXT NOT NULL,
     key TEXT NOT NULL,
     value TEXT NOT NULL,
     revision INTEGER NOT NULL,
     reason TEXT NOT NULL,
     quarantined_at TEXT NOT NULL
   );`,
];

/** A row moved out of the store at start-up because it could not be used. */
export interface QuarantinedRow {
  /** Its number in the quarantine table. */
  id: number;
  kind: string;
  key: string;
  /** The row's text as it was stored. */
  value: string;
  reason: string;
  quarantinedAt: string;
}

/** The single-host store: SQLite in WAL mode in the data folder. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
    this.stmts = {
      get: this.db.prepare<[string, string], { value: string; revision: number }>('SELECT value, revision FROM objects WHERE kind = ? AND key = ?'),
      list: this.db.prepare<[string], { key: string; value: string; revision: number }>('SELECT key, value, revision FROM objects WHERE kind = ? ORDER BY key'),
      nextRevision: this.db.prepare<[], { value: number }>("UPDATE counters SET value = value + 1 WHERE name = 'revision' RETURNING value"),
      upsert: this.db.prepare<[string, string, string, number]>(
        'INSERT INTO objects (kind, key, value, revision) VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, revision = excluded.revision',
      ),
      delete: this.db.prepare<[string, string]>('DELETE FROM objects WHERE kind = ? AND key = ?'),
    };
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    for (let v = current; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /**
   * Moves every row that cannot be used to the `quarantine` table (one transaction), so one
   * damaged row cannot keep the daemon from starting: a value that is not JSON, or one
   * `problem` finds fault with (it returns what is wrong). Returns the rows moved now.
   */
  quarantineBadRows(problem: (kind: string, key: string, value: unknown) => string | undefined): QuarantinedRow[] {
    const rows = this.db.prepare<[], { kind: string; key: string; value: string; revision: number }>('SELECT kind, key, value, revision FROM objects').all();
    const bad: Array<{ kind: string; key: string; value: string; revision: number; reason: string }> = [];
    for (const r of rows) {
      let reason: string | undefined;
      try {
        reason = problem(r.kind, r.key, JSON.parse(r.value));
      } catch (err) {
        reason = `not valid JSON (${(err as Error).message})`;
      }
      if (reason) bad.push({ ...r, reason });
    }
    if (bad.length === 0) return [];
    const at = new Date().toISOString();
    const insert = this.db.prepare<[string, string, string, number, string, string]>(
      'INSERT INTO quarantine (kind, key, value, revision, reason, quarantined_at) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const moved: QuarantinedRow[] = [];
    this.db.transaction(() => {
      for (const b of bad) {
        const { lastInsertRowid } = insert.run(b.kind, b.key, b.value, b.revision, b.reason, at);
        this.stmts.delete.run(b.kind, b.key);
        moved.push({ id: Number(lastInsertRowid), kind: b.kind, key: b.key, value: b.value, reason: b.reason, quarantinedAt: at });
      }
    })();
    return moved;
  }

  /** Every row in quarantine (this start's and earlier ones'), oldest first. */
  quarantined(): QuarantinedRow[] {
    return this.db
      .prepare<[], { id: number; kind: string; key: string; value: string; reason: string; quarantined_at: string }>(
        'SELECT id, kind, key, value, reason, quarantined_at FROM quarantine ORDER BY id',
      )
      .all()
      .map((r) => ({ id: r.id, kind: r.kind, key: r.key, value: r.value, reason: r.reason, quarantinedAt: r.quarantined_at }));
  }

  async get<T>(kind: StoreKind, key: string): Promise<Versioned<T> | undefined> {
    const row = this.stmts.get.get(kind, key);
    return row ? { key, value: JSON.parse(row.value) as T, revision: row.revision } : undefined;
  }

  async list<T>(kind: StoreKind): Promise<Array<Versioned<T>>> {
    return this.stmts.list.all(kind).map((r) => ({ key: r.key, value: JSON.parse(r.value) as T, revision: r.revision }));
  }

  async put<T>(kind: StoreKind, key: string, value: T, options: PutOptions = {}): Promise<number> {
    return this.db
      .transaction(() => {
        this.checkRevision(kind, key, options);
        const revision = this.stmts.nextRevision.get()!.value;
        this.stmts.upsert.run(kind, key, JSON.stringify(value), revision);
        return revision;
      })
      .immediate();
  }

  async delete(kind: StoreKind, key: string, options: PutOptions = {}): Promise<boolean> {
    return this.db
      .transaction(() => {
        this.checkRevision(kind, key, options);
        return this.stmts.delete.run(kind, key).changes > 0;
      })
      .immediate();
  }

  private checkRevision(kind: StoreKind, key: string, options: PutOptions): void {
    if (options.expectRevision === undefined) return;
    const row = this.stmts.get.get(kind, key);
    const holds = options.expectRevision === 0 ? !row : row?.revision === options.expectRevision;
    if (!holds) throw compareFailed(kind, key, options.expectRevision);
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
