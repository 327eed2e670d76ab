/**
 * A worker thread of the evaluation: regenerates the same traffic from the seed (deterministic, about
 * a second) and runs the configurations the main thread hands it, one at a time, each through its own
 * kernel and store.
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadPlugin } from './configs.ts';
import { runDetector, type DetectorSpec } from './run-plugin.ts';
import { generateTraffic, type TrafficOptions } from './traffic.ts';

/** Main → worker. */
export type WorkerRequest = { type: 'run'; spec: DetectorSpec } | { type: 'exit' };
/** Worker → main. */
export type WorkerReply =
  | { type: 'progress'; id: string; done: number; total: number }
  | { type: 'done'; result: import('./run-plugin.ts').RunResult }
  | { type: 'failed'; id: string; error: string };

const port = parentPort!;
const traffic = generateTraffic(workerData as TrafficOptions);

port.on('message', async (m: WorkerRequest) => {
  if (m.type === 'exit') {
    port.close();
    return;
  }
  try {
    const plugin = await loadPlugin(m.spec.source);
    const result = await runDetector(traffic, plugin, m.spec, (done, total) => port.postMessage({ type: 'progress', id: m.spec.id, done, total } satisfies WorkerReply));
    port.postMessage({ type: 'done', result } satisfies WorkerReply, [result.flagged.buffer as ArrayBuffer]);
  } catch (err) {
    port.postMessage({ type: 'failed', id: m.spec.id, error: (err as Error).stack ?? String(err) } satisfies WorkerReply);
  }
});
