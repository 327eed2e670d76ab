/**
 * The application `themis start` serves until the plugin kernel exists: it listens to every stage,
 * answers `continue` to each and accepts every message — the same work as the reference null
 * milters, which makes it the engine's benchmark target.
 * @module
 */
import { Decisions, type MilterApplication } from '../milter/index.ts';

/** An application that taps every stage and accepts everything. */
export function acceptAllApplication(): MilterApplication {
  const next = () => undefined;
  return {
    connect: next,
    helo: next,
    mailFrom: next,
    rcptTo: next,
    data: next,
    header: next,
    endOfHeaders: next,
    body: next,
    unknown: next,
    endOfMessage: () => Decisions.accept,
  };
}
