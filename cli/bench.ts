/** `cachebus bench [NAME...] [--json] [--smoke]`: the benchmark suite (bench/run.ts). */
export { usage, main as run } from '../bench/run.js';
