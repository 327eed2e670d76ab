// bench/postfix.ts, target "monitor": the monitor plugin alone (counters, per-minute history, top lists in
// the in-memory store). It claims no policy field: it watches every decision.
import { defineConfig } from 'themis-milter';

export default defineConfig({ plugins: ['themis-plugin-monitor'] });
