/**
 * `themis/milter`: the Sendmail milter protocol (version 6) for Node.js — codec, negotiation,
 * session state machine, server and MTA-side client. Knows nothing of policies or plugins.
 * @module
 */
export * from './constants.ts';
export * from './errors.ts';
export * from './codec.ts';
export * from './reply.ts';
export * from './macros.ts';
export * from './negotiate.ts';
export * from './mta-macros.ts';
export * from './logger.ts';
export * from './socket-spec.ts';
export * from './session.ts';
export * from './server.ts';
export * from './client.ts';
