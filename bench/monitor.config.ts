// The benchmark's monitor case: the kernel case (one trivial plugin tapping every stage) plus the
// monitor plugin with its defaults. The MTA is asked the same in both, so the difference in CPU per
// message is what the monitor itself costs (counting, top lists, the periodic flush to the store).
import { defineConfig } from 'themis-milter';
import kernelCase from './kernel.config.ts';

export default defineConfig({ ...kernelCase, plugins: [...kernelCase.plugins!, 'themis-plugin-monitor'] });
