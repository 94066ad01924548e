import { closePg, openPg } from '../bus/pg.js';
import { installTriggers, uninstallTriggers } from '../bus/outbox/triggers.js';
import { CachebusError } from '../bus/errors.js';
import { parse, required, UsageError } from './args.js';

export const usage = `cachebus install-triggers --table T --namespace NS [--database URL] [--key id] [--entity NAME]
                          [--outbox-table cachebus_outbox] [--uninstall]
  Installs namespace NS's triggers on table T: they record the cache key <entity>:<key> of every
  inserted, updated or deleted row (TRUNCATE: a clear of NS) in the outbox table (created if
  missing), in the same transaction. The sidecar (cachebus sidecar) publishes them. Several
  namespaces may watch one table; installing NS again replaces only NS's triggers.
  --entity defaults to the table name (without schema), --database to $DATABASE_URL.
  --uninstall removes NS's triggers (every namespace's without --namespace); the outbox stays.`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    table: { type: 'string', short: 't' },
    namespace: { type: 'string', short: 'n' },
    database: { type: 'string', short: 'd' },
    key: { type: 'string', default: 'id' },
    entity: { type: 'string' },
    'outbox-table': { type: 'string' },
    uninstall: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const table = required(values.table, 'table');
  const name = values.entity ?? table.split('.').pop()!;
  const def = { name, table, key: values.key, columns: [] };
  const pg = openPg(values.database ?? process.env.DATABASE_URL, 1);
  try {
    if (values.uninstall) {
      const gone = await uninstallTriggers(pg.pool, def, { outbox: values['outbox-table'], namespace: values.namespace });
      const whose = values.namespace === undefined ? 'cachebus triggers' : `triggers of namespace ${values.namespace}`;
      console.log(gone.length === 0 ? `no ${whose} on ${table}: nothing removed` : `removed ${gone.join(', ')} (${whose}) from ${table}`);
      return 0;
    }
    const namespace = required(values.namespace, 'namespace');
    if (values.key === '') throw new UsageError('--key must not be empty');
    const r = await installTriggers(pg.pool, def, { namespace, outbox: values['outbox-table'] });
    const others = r.namespaces.filter((n) => n !== namespace);
    console.log(`installed ${r.triggers.join(', ')} on ${table}: keys ${name}:<${values.key}> go to ${r.outbox} for namespace ${namespace}` +
      (others.length > 0 ? ` (also watched for namespaces ${others.join(', ')})` : ''));
    return 0;
  } catch (err) {
    const e = err as { code?: unknown; message?: string };
    if (err instanceof CachebusError) {
      console.error(`cachebus install-triggers: ${e.message} [${e.code as string}]`);
      return 1;
    }
    if (typeof e.code !== 'string' || !/^[0-9A-Z]{5}$/.test(e.code)) throw err; // not a Postgres error
    console.error(`cachebus install-triggers: ${e.message} [postgres ${e.code}]`);
    return 1;
  } finally {
    await closePg(pg);
  }
}
