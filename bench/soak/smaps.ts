/**
 * Where a process's resident memory is, from /proc/<pid>/smaps: the resident kB of each mapping,
 * grouped into the malloc heap (`[heap]`, glibc's main arena), anonymous mappings by kind (thread
 * arenas are 64 MiB reservations; V8's heap pages and everything else mmapped are the rest), the
 * stacks, and file-backed mappings (code, the node binary).
 *
 *   node bench/soak/smaps.ts PID [PID…]
 * @module
 */
import { readFileSync } from 'node:fs';

/** Resident kB by group. */
export interface SmapsSummary {
  rssKb: number;
  groups: Record<string, { mappings: number; sizeKb: number; rssKb: number }>;
}

/** Reads /proc/<pid>/smaps and sums the resident memory by group. */
export function smapsSummary(pid: number): SmapsSummary {
  const text = readFileSync(`/proc/${pid}/smaps`, 'latin1');
  const groups: SmapsSummary['groups'] = {};
  let rssKb = 0;
  let group = '';
  let size = 0;
  const header = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$/;
  for (const line of text.split('\n')) {
    const h = header.exec(line);
    if (h) {
      size = (parseInt(h[2], 16) - parseInt(h[1], 16)) / 1024;
      const path = h[5].trim();
      const perms = h[3];
      if (path === '[heap]') group = '[heap] (malloc main arena)';
      else if (path.startsWith('[stack')) group = '[stack]';
      else if (path.startsWith('[')) group = path;
      else if (path) group = `file ${path.split('/').pop()}`;
      else if (perms.startsWith('---')) group = 'anon, no access (reservations, guards)';
      else if (size >= 32768 && size <= 65536) group = 'anon 32–64 MiB (malloc thread arenas)';
      else if (size === 256) group = 'anon 256 KiB (V8 heap pages)';
      else if (size > 65536) group = 'anon > 64 MiB';
      else group = 'anon, other';
      groups[group] ??= { mappings: 0, sizeKb: 0, rssKb: 0 };
      groups[group].mappings++;
      groups[group].sizeKb += size;
      continue;
    }
    if (line.startsWith('Rss:')) {
      const kb = Number(line.slice(4).trim().split(/\s+/)[0]);
      groups[group].rssKb += kb;
      rssKb += kb;
    }
  }
  return { rssKb, groups };
}

/** The summary as text lines, largest resident group first; file mappings under 1 MB folded together. */
export function formatSmaps(s: SmapsSummary): string[] {
  const rows = Object.entries(s.groups);
  const small = rows.filter(([k, g]) => k.startsWith('file ') && g.rssKb < 1024);
  const big = rows.filter((r) => !small.includes(r));
  if (small.length) big.push([`${small.length} smaller files`, small.reduce((a, [, g]) => ({ mappings: a.mappings + g.mappings, sizeKb: a.sizeKb + g.sizeKb, rssKb: a.rssKb + g.rssKb }), { mappings: 0, sizeKb: 0, rssKb: 0 })]);
  return [`resident ${(s.rssKb / 1024).toFixed(1)} MB:`, ...big.sort((a, b) => b[1].rssKb - a[1].rssKb).map(([k, g]) => `  ${(g.rssKb / 1024).toFixed(1).padStart(7)} MB resident of ${(g.sizeKb / 1024).toFixed(0).padStart(6)} MB mapped in ${String(g.mappings).padStart(4)} mapping(s): ${k}`)];
}

if (import.meta.main) {
  for (const a of process.argv.slice(2)) process.stdout.write(`pid ${a} ${formatSmaps(smapsSummary(Number(a))).join('\n')}\n`);
}
