// The benchmark's kernel case: the kernel with one trivial plugin that taps every stage and has no
// objection, so the MTA is asked exactly what the bare engine (`themis start --engine-only`) is asked.
// The difference in CPU per message is what the kernel itself costs.
import { defineConfig, definePlugin } from 'themis-milter';

const nothing = () => undefined;
const trivial = definePlugin({
  name: 'bench-trivial',
  version: '1.0.0',
  kernel: '^1',
  setup: () => ({ connect: nothing, helo: nothing, mailFrom: nothing, rcptTo: nothing, data: nothing, header: nothing, endOfHeaders: nothing, body: nothing, endOfMessage: nothing }),
});

export default defineConfig({ plugins: [trivial] });
