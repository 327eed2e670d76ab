/**
 * Compares two V8 heap snapshots (`.heapsnapshot`, as `--heapsnapshot-signal` writes them): object
 * counts and self sizes by constructor (V8's node type + name), sorted by growth; with `--retainers NAME`
 * it also prints retaining paths of a few `NAME` objects of the second snapshot, from the object up to a
 * GC root, so that the structure holding them can be named.
 *
 *   node bench/soak/heapdiff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--top 30] [--retainers NAME] [--samples 3] [--depth 12]
 * @module
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/** A parsed snapshot with its field offsets. */
export class Heap {
  readonly s: Snapshot;
  readonly nf: number;
  readonly ef: number;
  readonly types: string[];
  readonly edgeTypes: string[];
  readonly iType: number;
  readonly iName: number;
  readonly iSize: number;
  readonly iEdges: number;
  readonly iId: number;
  readonly eType: number;
  readonly eName: number;
  readonly eTo: number;
  /** Index (node ordinal) of each node's first edge. */
  readonly firstEdge: Uint32Array;
  private reverse: { start: Uint32Array; from: Uint32Array; edge: Uint32Array } | undefined;

  constructor(path: string) {
    this.s = JSON.parse(readFileSync(path, 'utf8')) as Snapshot;
    const m = this.s.snapshot.meta;
    this.nf = m.node_fields.length;
    this.ef = m.edge_fields.length;
    this.types = m.node_types[0];
    this.edgeTypes = m.edge_types[0];
    this.iType = m.node_fields.indexOf('type');
    this.iName = m.node_fields.indexOf('name');
    this.iSize = m.node_fields.indexOf('self_size');
    this.iEdges = m.node_fields.indexOf('edge_count');
    this.iId = m.node_fields.indexOf('id');
    this.eType = m.edge_fields.indexOf('type');
    this.eName = m.edge_fields.indexOf('name_or_index');
    this.eTo = m.edge_fields.indexOf('to_node');
    const n = this.count;
    this.firstEdge = new Uint32Array(n + 1);
    let e = 0;
    for (let i = 0; i < n; i++) {
      this.firstEdge[i] = e;
      e += this.s.nodes[i * this.nf + this.iEdges];
    }
    this.firstEdge[n] = e;
  }

  get count(): number {
    return this.s.nodes.length / this.nf;
  }

  type(i: number): string {
    return this.types[this.s.nodes[i * this.nf + this.iType]];
  }

  name(i: number): string {
    return this.s.strings[this.s.nodes[i * this.nf + this.iName]];
  }

  size(i: number): number {
    return this.s.nodes[i * this.nf + this.iSize];
  }

  /** The aggregation key: `Name` for objects, `(type) name` for the rest (strings by type only). */
  key(i: number): string {
    const t = this.type(i);
    if (t === 'object' || t === 'native') return this.name(i);
    if (t === 'string' || t === 'concatenated string' || t === 'sliced string' || t === 'number' || t === 'bigint') return `(${t})`;
    if (t === 'closure') return `(closure) ${this.name(i) || 'anonymous'}`;
    return `(${t}) ${this.name(i).slice(0, 60)}`;
  }

  /** key → [count, self bytes]. */
  aggregate(): Map<string, [number, number]> {
    const out = new Map<string, [number, number]>();
    for (let i = 0; i < this.count; i++) {
      const k = this.key(i);
      const a = out.get(k);
      if (a) {
        a[0]++;
        a[1] += this.size(i);
      } else out.set(k, [1, this.size(i)]);
    }
    return out;
  }

  edgeName(e: number): string {
    const t = this.edgeTypes[this.s.edges[e * this.ef + this.eType]];
    const v = this.s.edges[e * this.ef + this.eName];
    return t === 'element' || t === 'hidden' ? `[${v}]` : t === 'weak' ? `(weak ${v})` : String(this.s.strings[v]);
  }

  edgeType(e: number): string {
    return this.edgeTypes[this.s.edges[e * this.ef + this.eType]];
  }

  /** Builds the reverse edge index (who points at whom). */
  private rev(): { start: Uint32Array; from: Uint32Array; edge: Uint32Array } {
    if (this.reverse) return this.reverse;
    const n = this.count;
    const edges = this.s.edges;
    const total = edges.length / this.ef;
    const counts = new Uint32Array(n + 1);
    for (let e = 0; e < total; e++) counts[edges[e * this.ef + this.eTo] / this.nf]++;
    const start = new Uint32Array(n + 1);
    for (let i = 0; i < n; i++) start[i + 1] = start[i] + counts[i];
    const fill = start.slice(0, n);
    const from = new Uint32Array(total);
    const edge = new Uint32Array(total);
    for (let i = 0; i < n; i++) {
      for (let e = this.firstEdge[i]; e < this.firstEdge[i + 1]; e++) {
        const to = edges[e * this.ef + this.eTo] / this.nf;
        from[fill[to]] = i;
        edge[fill[to]] = e;
        fill[to]++;
      }
    }
    this.reverse = { start, from, edge };
    return this.reverse;
  }

  /** One retaining path of node `i`, up to `depth` steps: prefers strong edges and named holders. */
  retainerPath(i: number, depth: number): string[] {
    const r = this.rev();
    const path: string[] = [];
    const seen = new Set<number>([i]);
    let cur = i;
    for (let d = 0; d < depth; d++) {
      let best = -1;
      let bestEdge = -1;
      let bestScore = -Infinity;
      for (let k = r.start[cur]; k < r.start[cur + 1]; k++) {
        const from = r.from[k];
        const e = r.edge[k];
        const et = this.edgeType(e);
        if (et === 'weak' || seen.has(from)) continue;
        const t = this.type(from);
        let score = 0;
        if (et === 'shortcut') score -= 5;
        if (t === 'synthetic') score -= 3;
        if (t === 'hidden' || t === 'code') score -= 2;
        if (t === 'object' || t === 'closure') score += 2;
        if (t === 'array') score += 1;
        if (score > bestScore) {
          bestScore = score;
          best = from;
          bestEdge = e;
        }
      }
      if (best < 0) break;
      path.push(`${this.edgeName(bestEdge)} <- ${this.key(best)} @${this.s.nodes[best * this.nf + this.iId]}`);
      seen.add(best);
      cur = best;
      if (this.type(best) === 'synthetic') break;
    }
    return path;
  }
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '30' }, retainers: { type: 'string', multiple: true }, samples: { type: 'string', default: '3' }, depth: { type: 'string', default: '14' } },
  });
  if (positionals.length < 1) {
    process.stderr.write('usage: node bench/soak/heapdiff.ts [BEFORE.heapsnapshot] AFTER.heapsnapshot [--top N] [--retainers NAME]... [--samples N] [--depth N]\n');
    process.exit(2);
  }
  const after = new Heap(positionals[positionals.length - 1]);
  const a = after.aggregate();
  const b = positionals.length > 1 ? new Heap(positionals[0]).aggregate() : new Map<string, [number, number]>();
  const rows = [...new Set([...a.keys(), ...b.keys()])].map((k) => {
    const [c1, s1] = a.get(k) ?? [0, 0];
    const [c0, s0] = b.get(k) ?? [0, 0];
    return { k, c0, c1, s0, s1 };
  });
  const top = Number(values.top);
  const mb = (x: number) => (x / 1048576).toFixed(2);
  const print = (title: string, sorted: typeof rows) => {
    process.stdout.write(`\n${title}\n${'count before'.padStart(12)} ${'after'.padStart(10)} ${'Δcount'.padStart(10)} ${'MB before'.padStart(10)} ${'after'.padStart(9)} ${'ΔMB'.padStart(8)}  constructor\n`);
    for (const r of sorted.slice(0, top)) process.stdout.write(`${String(r.c0).padStart(12)} ${String(r.c1).padStart(10)} ${String(r.c1 - r.c0).padStart(10)} ${mb(r.s0).padStart(10)} ${mb(r.s1).padStart(9)} ${mb(r.s1 - r.s0).padStart(8)}  ${r.k}\n`);
  };
  const tot = (m: Map<string, [number, number]>) => [...m.values()].reduce((x, [c, s]) => [x[0] + c, x[1] + s], [0, 0]);
  const [tc0, ts0] = tot(b);
  const [tc1, ts1] = tot(a);
  process.stdout.write(`heap objects: ${tc0} -> ${tc1} (${tc1 - tc0 >= 0 ? '+' : ''}${tc1 - tc0}); self size ${mb(ts0)} MB -> ${mb(ts1)} MB\n`);
  print('by self-size growth', [...rows].sort((x, y) => y.s1 - y.s0 - (x.s1 - x.s0)));
  print('by count growth', [...rows].sort((x, y) => y.c1 - y.c0 - (x.c1 - x.c0)));
  for (const name of values.retainers ?? []) {
    const samples = Number(values.samples);
    const hits: number[] = [];
    for (let i = 0; i < after.count && hits.length < 2000; i++) if (after.key(i) === name) hits.push(i);
    process.stdout.write(`\nretaining paths of ${name} (${hits.length >= 2000 ? '2000+' : hits.length} found; ${samples} shown, spread over them)\n`);
    for (let j = 0; j < Math.min(samples, hits.length); j++) {
      const i = hits[Math.floor((j * hits.length) / Math.min(samples, hits.length))];
      process.stdout.write(`  ${after.key(i)} @${after.s.nodes[i * after.nf + after.iId]}\n`);
      for (const step of after.retainerPath(i, Number(values.depth))) process.stdout.write(`    ${step}\n`);
    }
  }
}

if (import.meta.main) main();
