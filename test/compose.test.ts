import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';

/**
 * docker-compose.yml cannot be run here (no Docker): it is checked against the Compose JSON
 * Schema (a reduced, vendored form: test/schemas/compose-spec.json says why and what it covers)
 * and for the cross-references Compose only checks at `up` time.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');

interface Service {
  build?: string | { context?: string };
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  configs?: { source: string; target: string }[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  configs?: Record<string, { file?: string }>;
}

const compose = parse(read('docker-compose.yml')) as Compose;
const schema = JSON.parse(read('test/schemas/compose-spec.json')) as object;
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

describe('docker-compose.yml', () => {
  it('validates against the Compose JSON Schema', () => {
    const ok = validate(compose);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('the schema is not vacuous: it rejects an unknown condition, an unknown key and a bad healthcheck', () => {
    const bad = (mutate: (c: Compose & Record<string, unknown>) => void): boolean => {
      const c = structuredClone(compose) as Compose & Record<string, unknown>;
      mutate(c);
      return validate(c);
    };
    expect(bad((c) => { c.services.demo!.depends_on!.redis!.condition = 'service_ready'; })).toBe(false);
    expect(bad((c) => { (c.services.redis as Record<string, unknown>).imagee = 'redis'; })).toBe(false);
    expect(bad((c) => { (c.services.redis!.healthcheck as Record<string, unknown>).retries = [3]; })).toBe(false);
    expect(bad((c) => { c.servicez = {}; })).toBe(false);
  });

  it('has the whole stack, each service with a healthcheck', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['demo', 'grafana', 'postgres', 'prometheus', 'redis', 'sidecar']);
    for (const [name, s] of Object.entries(compose.services)) expect(s.healthcheck?.test, `${name} healthcheck`).toBeDefined();
  });

  it('runs Redis with AOF on and noeviction (the write-behind queue must never be evicted or lost)', () => {
    const cmd = compose.services.redis!.command!.join(' ');
    expect(cmd).toMatch(/--appendonly yes/);
    expect(cmd).toMatch(/--maxmemory-policy noeviction/);
  });

  it('depends_on points at services, waits for health only where a healthcheck exists, and has no cycle', () => {
    const names = new Set(Object.keys(compose.services));
    for (const [name, s] of Object.entries(compose.services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        expect(names.has(dep), `${name} depends on unknown ${dep}`).toBe(true);
        if (condition === 'service_healthy') expect(compose.services[dep]!.healthcheck, `${dep} needs a healthcheck`).toBeDefined();
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (n: string): void => {
      if (done.has(n)) return;
      expect(visiting.has(n), `dependency cycle through ${n}`).toBe(false);
      visiting.add(n);
      for (const d of Object.keys(compose.services[n]!.depends_on ?? {})) visit(d);
      visiting.delete(n);
      done.add(n);
    };
    for (const n of names) visit(n);
    expect(Object.keys(compose.services.demo!.depends_on!)).toEqual(expect.arrayContaining(['redis', 'postgres']));
    expect(Object.keys(compose.services.sidecar!.depends_on!)).toEqual(expect.arrayContaining(['redis', 'postgres']));
    expect(Object.keys(compose.services.grafana!.depends_on!)).toEqual(['prometheus']);
  });

  it('declares every named volume and config it uses, and every bind-mounted or config file exists', () => {
    for (const [name, s] of Object.entries(compose.services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('.') || source.startsWith('/')) expect(existsSync(join(ROOT, source)), `${name}: ${source}`).toBe(true);
        else expect(compose.volumes?.[source], `${name}: volume ${source}`).not.toBeUndefined();
      }
      for (const c of s.configs ?? []) expect(compose.configs?.[c.source], `${name}: config ${c.source}`).toBeDefined();
    }
    for (const [name, c] of Object.entries(compose.configs ?? {})) {
      if (c.file) expect(existsSync(join(ROOT, c.file)), `config ${name}: ${c.file}`).toBe(true);
    }
  });

  it('builds the cachebus image once, and runs entry points that the build emits', () => {
    expect(existsSync(join(ROOT, 'Dockerfile'))).toBe(true);
    expect(compose.services.sidecar!.build).toBe('.');
    expect(compose.services.demo!.image).toBe(compose.services.sidecar!.image);
    const dockerfile = read('Dockerfile');
    for (const svc of ['sidecar', 'demo']) {
      const script = compose.services[svc]!.command!.find((a) => a.startsWith('dist/'))!;
      const source = script.replace(/^dist\//, '').replace(/\.js$/, '.ts');
      expect(existsSync(join(ROOT, source)), `${svc} runs ${script}, built from ${source}`).toBe(true);
      expect(dockerfile).toContain(`COPY ${source.split('/')[0]} `);
    }
    expect(read('cli/cachebus.ts')).toMatch(/\bsidecar:/);
  });

  it('mounts grafana/ where Grafana and Prometheus read it, and the services Prometheus scrapes exist on the ports they serve', () => {
    const grafana = compose.services.grafana!;
    expect(grafana.volumes).toContain('./grafana/provisioning:/etc/grafana/provisioning:ro');
    const dashboards = grafana.volumes!.find((v) => v.startsWith('./grafana/dashboards:'))!.split(':')[1];
    const provider = parse(read('grafana/provisioning/dashboards/cachebus.yml')) as { providers: { options: { path: string } }[] };
    expect(provider.providers[0]!.options.path).toBe(dashboards);
    expect(grafana.environment!.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe(`${dashboards}/cachebus.json`);
    const ds = parse(read('grafana/provisioning/datasources/prometheus.yml')) as { datasources: { url: string }[] };
    expect(new URL(ds.datasources[0]!.url).hostname).toBe('prometheus');

    const prom = compose.services.prometheus!;
    expect(compose.configs![prom.configs![0]!.source]!.file).toBe('./grafana/prometheus.yml');
    expect(prom.configs![0]!.target).toBe('/etc/prometheus/prometheus.yml');
    const cfg = parse(read('grafana/prometheus.yml')) as { scrape_configs: { static_configs: { targets: string[] }[] }[] };
    const targets = cfg.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets)).filter((t) => !t.startsWith('localhost'));
    expect(targets.sort()).toEqual(['demo:9464', 'sidecar:9464']);
    const args = (svc: string): string => compose.services[svc]!.command!.join(' ');
    expect(args('demo')).toMatch(/--metrics-port 9464\b/);
    expect(compose.services.demo!.environment!.CACHEBUS_METRICS_HOST).toBe('0.0.0.0');
    expect(args('sidecar')).toMatch(/--port 9464\b/);
    expect(args('sidecar')).toMatch(/--host 0\.0\.0\.0\b/);
  });

  it('mounts the alert rules next to the Prometheus config that loads them', () => {
    const prom = compose.services.prometheus!;
    const cfg = parse(read('grafana/prometheus.yml')) as { rule_files?: string[] };
    expect(cfg.rule_files).toEqual(['alerts.yml']);
    // rule_files resolve against the config's directory: the same file beside it in both places
    const config = prom.configs!.find((c) => c.target === '/etc/prometheus/prometheus.yml')!;
    const rules = prom.configs!.find((c) => c.target === '/etc/prometheus/alerts.yml');
    expect(rules, 'prometheus: alerts.yml not mounted beside prometheus.yml').toBeDefined();
    expect(compose.configs![rules!.source]!.file).toBe('./grafana/alerts.yml');
    expect(dirname(compose.configs![config.source]!.file!)).toBe(dirname(compose.configs![rules!.source]!.file!));
  });
});
