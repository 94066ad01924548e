import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A schema of its own per test, in the shared `test` database: `search_path` points at it
 * on every pool connection. `drop()` removes it with everything in it.
 */
export class TestSchema {
  readonly name: string;
  readonly pool: pg.Pool;

  private constructor(name: string) {
    this.name = name;
    this.pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4, options: `-c search_path=${name}` });
  }

  static async create(): Promise<TestSchema> {
    const s = new TestSchema(`cbtest_${randomBytes(5).toString('hex')}`);
    await s.pool.query(`CREATE SCHEMA ${s.name}`);
    return s;
  }

  /** A connection string whose sessions use this schema (for child processes and psql). */
  get url(): string {
    const u = new URL(DATABASE_URL);
    u.searchParams.set('options', `-c search_path=${this.name}`);
    return u.toString();
  }

  async drop(): Promise<void> {
    await this.pool.query(`DROP SCHEMA IF EXISTS ${this.name} CASCADE`);
    await this.pool.end();
  }
}
