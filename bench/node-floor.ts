/**
 * `bench/node-floor.ts`: the cheapest null milter Node can run, for `npm run bench -- --targets
 * themis,c,node-floor`. It is not part of Themis. It shows what the platform costs on its own (a
 * `net.Server`, one `data` event per read and one `socket.write` per answer), so that Themis's own
 * overhead can be read off as the difference.
 *
 * Like the reference null milters, it asks for every stage with a reply for each (protocol 0). It
 * answers `continue` to every event and `accept` at end of message, and decodes nothing but the
 * framing. It is not a conforming milter (no state machine, no checks): use it only under the bench.
 *
 * Usage: node bench/node-floor.ts start --listen inet:PORT@127.0.0.1   (the `themis start` syntax)
 * @module
 */
import { createServer } from 'node:net';
import { Command, Response } from '../src/milter/constants.ts';
import { encodeOptionNegotiation, encodePacket } from '../src/milter/codec.ts';

const spec = process.argv[process.argv.indexOf('--listen') + 1] ?? '';
const m = /^inet:(\d+)@(127\.\d+\.\d+\.\d+)$/.exec(spec);
if (!m) {
  process.stderr.write('usage: node bench/node-floor.ts start --listen inet:PORT@127.0.0.1\n');
  process.exit(2);
}

const CONTINUE = encodePacket(Response.CONTINUE);
const ACCEPT = encodePacket(Response.ACCEPT);
const OPTNEG = encodeOptionNegotiation({ version: 6, actions: 0, protocol: 0 });

const server = createServer({ noDelay: true }, (socket) => {
  let partial: Buffer | null = null;
  socket.on('data', (chunk: Buffer) => {
    let buf = chunk;
    if (partial !== null) {
      buf = Buffer.concat([partial, chunk]);
      partial = null;
    }
    let off = 0;
    let out: Buffer | null = null;
    const end = buf.length;
    while (end - off >= 5) {
      const len = buf.readUInt32BE(off);
      if (end - off - 4 < len) break;
      let reply: Buffer | null = null;
      switch (buf[off + 4]) {
        case Command.OPTNEG:
          reply = OPTNEG;
          break;
        case Command.MACRO:
        case Command.ABORT:
          break;
        case Command.QUIT:
          socket.end();
          break;
        case Command.BODYEOB:
          reply = ACCEPT;
          break;
        default:
          reply = CONTINUE;
      }
      if (reply !== null) out = out === null ? reply : Buffer.concat([out, reply]);
      off += 4 + len;
    }
    if (off < end) partial = Buffer.from(buf.subarray(off));
    if (out !== null && socket.writable) socket.write(out);
  });
  socket.on('error', () => {});
});
server.listen(Number(m[1]), m[2]);
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => process.exit(0));
