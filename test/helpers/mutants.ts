/**
 * Deliberately broken builds, made from the compiled `dist/` with no hook in the library: the
 * build is copied to a temp dir and its JavaScript patched as a careless change would break it.
 * Every patch must match its text exactly once, so a change of the source makes the test that
 * uses it fail loudly instead of silently testing an unbroken build.
 */
import { cpSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Patch { readonly file: string; readonly from: string; readonly to: string }

export const MUTANTS = {
  /** The stream reader never reports a gap: no per-entry chain check, and the stream checks adopt the new position silently. */
  'no-gap-check': [
    {
      file: 'bus/reader.js',
      from: '        this.#adopt(info);\n        this.#h.onGap(cause, detail);\n',
      to: '        this.#adopt(info);\n',
    },
    { file: 'bus/reader.js', from: 'if (this.#epoch !== undefined && f.e !== this.#epoch) {', to: 'if (false) {' },
    { file: 'bus/reader.js', from: 'else if (f.p !== this.#head) {', to: 'else if (false) {' },
  ],
  /** The write-behind upsert loses its version guard: `ON CONFLICT … DO UPDATE` whatever the stored version. */
  'no-version-guard': [
    {
      file: 'bus/write-behind/upsert.js',
      from: ' WHERE cur.${v} IS NULL OR cur.${v} < EXCLUDED.${v}`',
      to: '`',
    },
  ],
} satisfies Record<string, readonly Patch[]>;
export type Mutant = keyof typeof MUTANTS;

export interface MutantBuild {
  /** The patched CLI: `node <cli> torture …`. */
  readonly cli: string;
  readonly dir: string;
  dispose(): void;
}

/** Copies dist/ (with package.json and a node_modules link) to a temp dir and applies the mutant's patches. */
export function mutantBuild(mutant: Mutant): MutantBuild {
  const dir = mkdtempSync(join(tmpdir(), `cachebus-${mutant}-`));
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(realpathSync(join(ROOT, 'node_modules')), join(dir, 'node_modules'), 'dir');
  for (const p of MUTANTS[mutant] as readonly Patch[]) {
    const path = join(dir, 'dist', p.file);
    const text = readFileSync(path, 'utf8');
    const n = text.split(p.from).length - 1;
    if (n !== 1) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`mutant ${mutant}: expected the text to patch once in dist/${p.file}, found it ${n} times (did the source change? update test/helpers/mutants.ts): ${JSON.stringify(p.from)}`);
    }
    writeFileSync(path, text.replace(p.from, p.to));
  }
  return { cli: join(dir, 'dist', 'cli', 'cachebus.js'), dir, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
