import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The types a user writes against, type-checked as a user's app would be: README's TypeScript
 * examples (extracted as written) and a few inference checks, against the built declarations
 * (dist/: run tsc first) under every tsconfig setting docs/options.md says is supported.
 */
const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** What README's fragments use without declaring: the app's own functions and values. */
const PRELUDE = `import type { TransactionDb } from 'cachebus';
interface Product { id: number; name: string; price: number; version?: number }
declare function loadProduct(id: number): Promise<Product | null>;
declare const value: Product;
declare function computeTotal(orderId: number): Promise<number>;
declare function partnerIdsOf(companyId: string): number[];
declare const ids: number[];
declare const pool: TransactionDb;
`;

/** Inference the README promises, and mistakes that must stay errors (@ts-expect-error fails if they type-check). */
const INFERENCE = `import { createCache, type Cache, type EntityHandle, LoadTimeoutError } from 'cachebus';

interface Product { id: number; name: string; price: number }
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
const assert = <T extends true>(): T | undefined => undefined;

const cache = await createCache({ redis: false, namespace: 'types', maxEntries: 10, ttl: '1h', timeout: '5s', logger: console });
const p = await cache.get('products:1', async (): Promise<Product | undefined> => ({ id: 1, name: 'lamp', price: 3 }));
assert<Equal<typeof p, Product | undefined>>();
const n = await cache.get('products:none', async () => null as Product | null, { ttl: '30s' });
assert<Equal<typeof n, Product | null | undefined>>();
const products: EntityHandle<Product> = cache.entity<Product>({ name: 'products', key: 'id', columns: ['name', 'price'] });
const row = await products.get(1);
assert<Equal<typeof row, Product | undefined>>();
await products.update(1, { price: 4 });
// @ts-expect-error not a column of Product
await products.update(1, { colour: 'red' });
await cache.transaction(async (tx) => {
  const t = await tx.get('products:1', async (): Promise<Product> => ({ id: 1, name: 'lamp', price: 3 }));
  assert<Equal<typeof t, Product | undefined>>();
});
const has: boolean = cache.has('products:1');
await cache.delete('products:1');

const typed: Cache<Product> = await createCache<Product>({ redis: false, namespace: 'types', maxEntries: 10 });
const q = await typed.get('products:2', () => ({ id: 2, name: 'desk', price: 9 }));
assert<Equal<typeof q, Product | undefined>>();
// @ts-expect-error a typed cache holds only its own type
await typed.get('products:3', () => 42);
// @ts-expect-error undefined is never a value (it means "nothing to cache")
await typed.set('products:4', undefined);
// @ts-expect-error not a duration
await createCache({ redis: false, namespace: 'types', maxEntries: 10, ttl: '1 fortnight' });
const e: unknown = undefined;
if (e instanceof LoadTimeoutError) console.log(e.code, e.key, e.timeoutMs, has);
`;

/** The ```ts blocks of a markdown file, in order, as one module. */
function tsBlocks(file: string): string {
  const md = readFileSync(join(ROOT, file), 'utf8');
  return [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]).join('\n');
}

/** The tsconfig settings docs/options.md ("TypeScript") lists as supported. */
const SETTINGS = {
  'strict + noUncheckedIndexedAccess': { strict: true, noUncheckedIndexedAccess: true },
  'strict + noUncheckedIndexedAccess + exactOptionalPropertyTypes': { strict: true, noUncheckedIndexedAccess: true, exactOptionalPropertyTypes: true },
} as const;

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachebus-types-'));
  writeFileSync(join(dir, 'readme.ts'), `${PRELUDE}\n${tsBlocks('README.md')}\nexport {};\n`);
  writeFileSync(join(dir, 'inference.ts'), `${INFERENCE}\nexport {};\n`);
  for (const [i, options] of Object.values(SETTINGS).entries()) {
    writeFileSync(join(dir, `tsconfig.${i}.json`), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'esnext', moduleResolution: 'bundler', noEmit: true, skipLibCheck: true,
        typeRoots: [join(ROOT, 'node_modules', '@types')], types: ['node'],
        paths: { cachebus: [join(ROOT, 'dist', 'worker-runtime', 'index.d.ts')] },
        ...options,
      },
      files: ['readme.ts', 'inference.ts'],
    }));
  }
});

afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

describe('types a user writes against', () => {
  it('README has TypeScript examples to check', () => {
    expect(tsBlocks('README.md')).toMatch(/createCache/);
    expect(tsBlocks('README.md')).toMatch(/cache\.entity/);
  });

  for (const [i, name] of Object.keys(SETTINGS).entries()) {
    it(`README's examples and get/entity inference type-check without casts under ${name}`, async () => {
      const out = await exec('node', [TSC, '-p', `tsconfig.${i}.json`], { cwd: dir }).then(() => '', (err: { stdout: string }) => err.stdout);
      expect(out).toBe('');
    }, 120_000);
  }
});
