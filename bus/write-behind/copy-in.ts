import type pg from 'pg';

/**
 * `COPY … FROM STDIN` with the `pg` driver and no extra package: a query object `pg` submits
 * like any other (the protocol pg-copy-streams uses), sending `data` (COPY text format) at once.
 */
export function copyIn(client: pg.ClientBase, sql: string, data: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let rowCount = 0;
    let failed = false;
    const submittable = {
      submit(connection: { query(text: string): void }): void {
        connection.query(sql);
      },
      handleCopyInResponse(connection: { sendCopyFromChunk(b: Buffer): void; endCopyFrom(): void }): void {
        connection.sendCopyFromChunk(Buffer.from(data));
        connection.endCopyFrom();
      },
      handleCommandComplete(msg: { text?: string }): void {
        rowCount = Number(/(\d+)$/.exec(msg.text ?? '')?.[1] ?? 0);
      },
      handleReadyForQuery(): void {
        if (!failed) resolve(rowCount);
      },
      handleError(err: Error): void {
        failed = true;
        reject(err);
      },
      handleRowDescription(): void {},
      handleDataRow(): void {},
      handleEmptyQuery(): void {},
      handlePortalSuspended(): void {},
      handleCopyData(): void {},
    };
    client.query(submittable as unknown as pg.QueryConfig);
  });
}

/** One value in COPY text format. */
export function copyValue(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  if (typeof v === 'boolean') return v ? 't' : 'f';
  const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'));
}
