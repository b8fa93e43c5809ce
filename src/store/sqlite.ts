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
];

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
