import { closePg, openPg } from '../bus/pg.js';
import { installTriggers, uninstallTriggers } from '../bus/outbox/triggers.js';
import { UsageError, databaseUrl, namespaceFlag, noPositionals, parse, required } from './args.js';
import { checkPostgres } from './checks.js';

export const usage = `cachebus install-triggers --table T --namespace NS [--database URL] [--key id] [--entity NAME]
                          [--outbox-table cachebus_outbox] [--uninstall]
  Installs namespace NS's triggers on table T: they record the cache key <entity>:<key> of every
  inserted, updated or deleted row (TRUNCATE: a clear of NS) in the outbox table (created if
  missing), in the same transaction. The sidecar (cachebus sidecar) publishes them. Several
  namespaces may watch one table; installing NS again replaces only NS's triggers.
  --entity defaults to the table name (without schema), --database to $DATABASE_URL.
  --uninstall removes NS's triggers (every namespace's without --namespace); the outbox stays.`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
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
  noPositionals(positionals);
  const table = required(values.table, 'table');
  const name = values.entity ?? table.split('.').pop()!;
  const def = { name, table, key: values.key, columns: [] };
  const database = databaseUrl(values.database);
  const namespace = values.uninstall && values.namespace === undefined ? undefined : namespaceFlag(values.namespace);
  if (values.key === '') throw new UsageError('--key must not be empty');
  await checkPostgres(database);
  const pg = openPg(database, 1);
  try {
    if (values.uninstall) {
      const gone = await uninstallTriggers(pg.pool, def, { outbox: values['outbox-table'], namespace });
      const whose = namespace === undefined ? 'cachebus triggers' : `triggers of namespace ${namespace}`;
      console.log(gone.length === 0 ? `no ${whose} on ${table}: nothing removed` : `removed ${gone.join(', ')} (${whose}) from ${table}`);
      return 0;
    }
    const r = await installTriggers(pg.pool, def, { namespace: namespace!, outbox: values['outbox-table'] });
    const others = r.namespaces.filter((n) => n !== namespace);
    console.log(`installed ${r.triggers.join(', ')} on ${table}: keys ${name}:<${values.key}> go to ${r.outbox} for namespace ${namespace}` +
      (others.length > 0 ? ` (also watched for namespaces ${others.join(', ')})` : ''));
    return 0;
  } finally {
    await closePg(pg);
  }
}
