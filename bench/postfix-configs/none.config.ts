// bench/postfix.ts, targets "engine", "repo" and "unix", and bench/sendmail.ts: Themis with no plugin and no
// policy — the kernel alone, which accepts every message and asks the MTA for no stage. (The repository's
// themis.config.ts was this until it started demonstrating the built-in plugins; these targets keep
// measuring the bare kernel.)
import { defineConfig } from 'themis-milter';

export default defineConfig({});
