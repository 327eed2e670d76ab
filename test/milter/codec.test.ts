// Byte vectors from the protocol reference (section 9), and every framing edge of the decoder.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Action,
  Command,
  FrameDecoder,
  MilterError,
  Protocol,
  Response,
  encodeChunks,
  encodeConnect,
  encodeMacros,
  encodeOptionNegotiation,
  encodePacket,
  encodeStrings,
  negotiate,
  readConnect,
  readHeader,
  readMacros,
  readOptionNegotiation,
  readStrings,
  stripAngleBrackets,
} from '../../src/milter/index.ts';
import { hex, toHex } from '../helpers/raw.ts';

/** Decodes one whole vector and returns its code and payload. */
function one(bytes: Buffer): { code: number; payload: Buffer } {
  const got: { code: number; payload: Buffer }[] = [];
  new FrameDecoder().push(bytes, (code, payload) => got.push({ code, payload: Buffer.from(payload) }));
  assert.equal(got.length, 1);
  return got[0];
}

const N1 = '00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff';

describe('negotiation vectors', () => {
  it('N1: decodes the Postfix offer', () => {
    const { code, payload } = one(hex(N1));
    assert.equal(code, Command.OPTNEG);
    assert.deepEqual(readOptionNegotiation(payload), { version: 6, actions: 0x1ff, protocol: 0x1fffff });
  });

  it('N2: NOHELO|NR_HDR|NOUNKNOWN|NODATA|SKIP, actions ADDHDRS|CHGHDRS', () => {
    const offer = readOptionNegotiation(one(hex(N1)).payload);
    const n = negotiate(offer, {
      stages: ['connect', 'mailFrom', 'rcptTo', 'header', 'endOfHeaders', 'body', 'endOfMessage'],
      noReply: ['header'],
      actions: Action.ADDHDRS | Action.CHGHDRS,
      skip: true,
      answerData: false, // the reference's exchange switches DATA off
    });
    assert.equal(toHex(encodeOptionNegotiation(n.reply)), toHex(hex('00 00 00 0d 4f 00 00 00 06 00 00 00 11 00 00 07 82')));
    assert.ok(!n.replyExpected.has('header'));
    assert.ok(n.replyExpected.has('endOfHeaders'));
  });

  it('N2 with the default: DATA stays negotiated and answered (no NODATA, no NR_DATA), so Postfix never flushes an unanswered DATA', () => {
    const offer = readOptionNegotiation(one(hex(N1)).payload);
    const n = negotiate(offer, { stages: ['connect', 'endOfMessage'], noReply: ['connect', 'data'] });
    assert.equal(n.reply.protocol & (Protocol.NODATA | Protocol.NR_DATA), 0);
    assert.ok(n.replyExpected.has('data'));
    assert.ok(n.stages.has('data'));
    assert.ok(n.reply.protocol & Protocol.NR_CONN, 'other no-reply wishes are kept');
    const off = negotiate(offer, { stages: ['connect', 'endOfMessage'], answerData: false });
    assert.ok(off.reply.protocol & Protocol.NODATA, 'answerData: false switches DATA off again');
  });

  it('N3: a macro list for ENVFROM sets SETSYMLIST', () => {
    const offer = readOptionNegotiation(one(hex(N1)).payload);
    const all = ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body', 'unknown'] as const;
    const n = negotiate(offer, { stages: all, actions: Action.ADDHDRS, macros: { mailFrom: ['{auth_authen}', '{mail_addr}'] } });
    assert.equal(
      toHex(encodeOptionNegotiation(n.reply)),
      toHex(hex('00 00 00 2b 4f 00 00 00 06 00 00 01 01 00 00 00 00 00 00 00 02 7b 61 75 74 68 5f 61 75 74 68 65 6e 7d 20 7b 6d 61 69 6c 5f 61 64 64 72 7d 00')),
    );
  });

  it('N4: NR_CONN with lists for CONNECT and EOM, in stage order', () => {
    const offer = readOptionNegotiation(one(hex(N1)).payload);
    const all = ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body', 'unknown'] as const;
    const n = negotiate(offer, { stages: all, noReply: ['connect'], actions: Action.ADDHDRS, macros: { endOfMessage: ['i'], connect: ['j', '{client_addr}'] } });
    const bytes = encodeOptionNegotiation(n.reply);
    assert.equal(toHex(bytes), toHex(hex('00 00 00 27 4f 00 00 00 06 00 00 01 01 00 00 10 00 00 00 00 00 6a 20 7b 63 6c 69 65 6e 74 5f 61 64 64 72 7d 00 00 00 00 05 69 00')));
    const back = readOptionNegotiation(bytes.subarray(5));
    assert.deepEqual([...back.macros!.entries()], [[0, 'j {client_addr}'], [5, 'i']]);
  });

  it('answers min(6, mta) and never asks for unoffered bits', () => {
    const n = negotiate({ version: 2, actions: 0x3f, protocol: 0x7f }, { stages: ['connect'], noReply: ['connect'], actions: Action.CHGFROM | Action.ADDHDRS, skip: true, headerLeadingSpace: true, macros: { connect: ['j'] } });
    assert.equal(n.reply.version, 2);
    assert.equal(n.reply.actions, Action.ADDHDRS);
    assert.equal(n.refusedActions, Action.CHGFROM);
    assert.equal(n.reply.protocol & ~0x7f, 0);
    assert.equal(n.reply.macros, undefined, 'no macro lists below version 6');
    assert.ok(n.replyExpected.has('connect'), 'NR_CONN not offered: the engine must answer itself');
    assert.ok(!n.stages.has('data') && !n.stages.has('unknown'), 'v2 has no DATA or UNKNOWN');
  });

  it('refuses an MTA below version 2 with a coded error', () => {
    assert.throws(() => negotiate({ version: 1, actions: 0, protocol: 0 }, { stages: [] }), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_VERSION');
  });

  it('switches off the body unless a body handler exists', () => {
    const n = negotiate({ version: 6, actions: 0x1ff, protocol: 0x1fffff }, { stages: ['mailFrom'] });
    assert.ok(n.reply.protocol & Protocol.NOBODY);
    assert.ok(n.reply.protocol & Protocol.NOHDRS);
    assert.equal(n.reply.protocol & Protocol.NOMAIL, 0);
  });
});

describe('macro vectors', () => {
  it('D1: connect macros', () => {
    const bytes = hex('00 00 00 24 44 43 6a 00 6d 78 2e 65 78 61 6d 70 6c 65 2e 6e 65 74 00 7b 64 61 65 6d 6f 6e 5f 6e 61 6d 65 7d 00 6d 78 00');
    const m = readMacros(one(bytes).payload);
    assert.equal(m.command, Command.CONNECT);
    assert.deepEqual(m.pairs, ['j', 'mx.example.net', '{daemon_name}', 'mx']);
    assert.equal(toHex(encodeMacros(Command.CONNECT, { j: 'mx.example.net', '{daemon_name}': 'mx' })), toHex(bytes));
  });

  it('D2: an empty list (Postfix D U) is valid', () => {
    const m = readMacros(one(hex('00 00 00 02 44 55')).payload);
    assert.deepEqual(m, { command: Command.UNKNOWN, pairs: [] });
    assert.equal(toHex(encodeMacros(Command.UNKNOWN, {})), '00 00 00 02 44 55');
  });

  it('D3: authenticated MAIL macros', () => {
    const bytes = hex('00 00 00 46 44 4d 7b 61 75 74 68 5f 74 79 70 65 7d 00 50 4c 41 49 4e 00 7b 61 75 74 68 5f 61 75 74 68 65 6e 7d 00 61 6c 69 63 65 00 7b 6d 61 69 6c 5f 61 64 64 72 7d 00 61 6c 69 63 65 40 65 78 61 6d 70 6c 65 2e 6f 72 67 00');
    assert.deepEqual(readMacros(one(bytes).payload).pairs, ['{auth_type}', 'PLAIN', '{auth_authen}', 'alice', '{mail_addr}', 'alice@example.org']);
  });

  it('D4/D5: per-header and end-of-data macros', () => {
    assert.deepEqual(readMacros(one(hex('00 00 00 0a 44 4c 69 00 34 58 79 5a 31 00')).payload), { command: Command.HEADER, pairs: ['i', '4XyZ1'] });
    assert.deepEqual(readMacros(one(hex('00 00 00 0a 44 45 69 00 34 58 79 5a 31 00')).payload), { command: Command.BODYEOB, pairs: ['i', '4XyZ1'] });
  });

  it('pads an odd count of strings with an empty value', () => {
    const p = Buffer.from('Cj\0mx\0{x}\0', 'latin1');
    assert.deepEqual(readMacros(p).pairs, ['j', 'mx', '{x}', '']);
  });
});

describe('event vectors', () => {
  it('V1: CONNECT IPv4', () => {
    const bytes = hex('00 00 00 20 43 6d 61 69 6c 2e 65 78 61 6d 70 6c 65 2e 6f 72 67 00 34 c3 50 31 39 32 2e 30 2e 32 2e 31 30 00');
    assert.deepEqual(readConnect(one(bytes).payload), { hostname: 'mail.example.org', family: '4', port: 50000, address: '192.0.2.10' });
    assert.equal(toHex(encodeConnect({ hostname: 'mail.example.org', family: '4', port: 50000, address: '192.0.2.10' })), toHex(bytes));
  });

  it('V2: CONNECT IPv6, Postfix style', () => {
    const bytes = hex('00 00 00 1e 43 5b 32 30 30 31 3a 64 62 38 3a 3a 31 5d 00 36 00 19 32 30 30 31 3a 64 62 38 3a 3a 31 00');
    assert.deepEqual(readConnect(one(bytes).payload), { hostname: '[2001:db8::1]', family: '6', port: 25, address: '2001:db8::1' });
  });

  it('V3: CONNECT IPv6, Sendmail style: the IPv6: prefix is stripped', () => {
    const bytes = hex('00 00 00 28 43 5b 49 50 76 36 3a 32 30 30 31 3a 64 62 38 3a 3a 31 5d 00 36 00 19 49 50 76 36 3a 32 30 30 31 3a 64 62 38 3a 3a 31 00');
    assert.equal(readConnect(one(bytes).payload).address, '2001:db8::1');
  });

  it('V4: CONNECT on a UNIX socket carries the 2-byte zero port', () => {
    const bytes = hex('00 00 00 15 43 6c 6f 63 61 6c 68 6f 73 74 00 4c 00 00 2f 74 6d 70 2f 73 00');
    assert.deepEqual(readConnect(one(bytes).payload), { hostname: 'localhost', family: 'L', port: 0, address: '/tmp/s' });
    assert.equal(toHex(encodeConnect({ hostname: 'localhost', family: 'L', port: 0, address: '/tmp/s' })), toHex(bytes));
  });

  it('V5: CONNECT with family U ends after the family byte', () => {
    const bytes = hex('00 00 00 0c 43 6c 6f 63 61 6c 68 6f 73 74 00 55');
    assert.deepEqual(readConnect(one(bytes).payload), { hostname: 'localhost', family: 'U', port: undefined, address: undefined });
    assert.equal(toHex(encodeConnect({ hostname: 'localhost', family: 'U' })), toHex(bytes));
  });

  it('rejects an unknown family with a coded error', () => {
    assert.throws(() => readConnect(Buffer.from('h\0X\0\0a\0', 'latin1')), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_MALFORMED');
  });

  it('V6: HELO', () => {
    assert.deepEqual(readStrings(one(hex('00 00 00 14 48 63 6c 69 65 6e 74 2e 65 78 61 6d 70 6c 65 2e 6f 72 67 00')).payload), ['client.example.org']);
  });

  it('V7: MAIL with ESMTP args', () => {
    const bytes = hex('00 00 00 1f 4d 3c 61 6c 69 63 65 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00 53 49 5a 45 3d 31 30 32 34 00');
    const argv = readStrings(one(bytes).payload);
    assert.deepEqual(argv, ['<alice@example.org>', 'SIZE=1024']);
    assert.equal(stripAngleBrackets(argv[0]), 'alice@example.org');
    assert.equal(toHex(encodeStrings(Command.MAIL, ['<alice@example.org>', 'SIZE=1024'])), toHex(bytes));
  });

  it('V8/V9: the null sender, bracketed and as Postfix non-SMTP emulation sends it', () => {
    assert.deepEqual(readStrings(one(hex('00 00 00 04 4d 3c 3e 00')).payload), ['<>']);
    assert.equal(stripAngleBrackets('<>'), '');
    assert.deepEqual(readStrings(one(hex('00 00 00 02 4d 00')).payload), ['']);
  });

  it('V12–V14: headers, folded and empty', () => {
    assert.deepEqual(readHeader(one(hex('00 00 00 0c 4c 53 75 62 6a 65 63 74 00 48 69 00')).payload), { name: 'Subject', value: 'Hi' });
    assert.deepEqual(readHeader(one(hex('00 00 00 0d 4c 58 2d 4c 6f 6e 67 00 61 0a 09 62 00')).payload), { name: 'X-Long', value: 'a\n\tb' });
    assert.deepEqual(readHeader(one(hex('00 00 00 0a 4c 58 2d 45 6d 70 74 79 00 00')).payload), { name: 'X-Empty', value: '' });
  });

  it('V11, V15–V19: payload-less commands, body, unknown', () => {
    for (const [code, bytes] of [[Command.DATA, '00 00 00 01 54'], [Command.EOH, '00 00 00 01 4e'], [Command.BODYEOB, '00 00 00 01 45'], [Command.ABORT, '00 00 00 01 41'], [Command.QUIT, '00 00 00 01 51'], [Command.QUIT_NC, '00 00 00 01 4b']] as const) {
      assert.equal(toHex(encodePacket(code)), bytes);
    }
    assert.equal(one(hex('00 00 00 08 42 48 65 6c 6c 6f 0d 0a')).payload.toString(), 'Hello\r\n');
    assert.deepEqual(readStrings(one(hex('00 00 00 0a 55 58 46 4f 4f 20 62 61 72 00')).payload), ['XFOO bar']);
  });

  it('keeps 8-bit bytes intact in latin1 mode', () => {
    const p = Buffer.from([0x58, 0, 0xff, 0xe9, 0]);
    const h = readHeader(p, 'latin1');
    assert.deepEqual(Buffer.from(h.value, 'latin1'), Buffer.from([0xff, 0xe9]));
    assert.deepEqual(encodeStrings(Response.ADDHEADER, [h.name, h.value], 'latin1').subarray(5), p);
  });
});

describe('response vectors', () => {
  it('R1–R7: single-byte decisions', () => {
    const table = [[Response.CONTINUE, '63'], [Response.ACCEPT, '61'], [Response.REJECT, '72'], [Response.TEMPFAIL, '74'], [Response.DISCARD, '64'], [Response.SKIP, '73'], [Response.PROGRESS, '70']] as const;
    for (const [code, byte] of table) assert.equal(toHex(encodePacket(code)), `00 00 00 01 ${byte}`);
  });

  it('M-vectors: header, sender, recipient, body and quarantine packets', () => {
    assert.equal(toHex(encodeStrings(Response.ADDHEADER, ['X-Spam', 'yes'])), toHex(hex('00 00 00 0c 68 58 2d 53 70 61 6d 00 79 65 73 00')));
    assert.equal(toHex(encodeStrings(Response.INSHEADER, ['X-First', '1'], 'utf8', 0)), toHex(hex('00 00 00 0f 69 00 00 00 00 58 2d 46 69 72 73 74 00 31 00')));
    assert.equal(toHex(encodeStrings(Response.CHGHEADER, ['Subject', 'New'], 'utf8', 1)), toHex(hex('00 00 00 11 6d 00 00 00 01 53 75 62 6a 65 63 74 00 4e 65 77 00')));
    assert.equal(toHex(encodeStrings(Response.CHGHEADER, ['X-Old', ''], 'utf8', 2)), toHex(hex('00 00 00 0c 6d 00 00 00 02 58 2d 4f 6c 64 00 00')));
    assert.equal(toHex(encodeStrings(Response.CHGFROM, ['<b@example.org>'])), toHex(hex('00 00 00 11 65 3c 62 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00')));
    assert.equal(toHex(encodeStrings(Response.CHGFROM, ['<b@example.org>', 'RET=HDRS'])), toHex(hex('00 00 00 1a 65 3c 62 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00 52 45 54 3d 48 44 52 53 00')));
    assert.equal(toHex(encodeStrings(Response.ADDRCPT, ['<c@example.com>'])), toHex(hex('00 00 00 11 2b 3c 63 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00')));
    assert.equal(toHex(encodeStrings(Response.ADDRCPT_PAR, ['<c@example.com>', 'NOTIFY=NEVER'])), toHex(hex('00 00 00 1e 32 3c 63 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00 4e 4f 54 49 46 59 3d 4e 45 56 45 52 00')));
    assert.equal(toHex(encodeStrings(Response.DELRCPT, ['<bob@example.com>'])), toHex(hex('00 00 00 13 2d 3c 62 6f 62 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00')));
    assert.equal(toHex(encodePacket(Response.REPLBODY, Buffer.from('New\r\n'))), toHex(hex('00 00 00 06 62 4e 65 77 0d 0a')));
    assert.equal(toHex(encodeStrings(Response.QUARANTINE, ['virus'])), toHex(hex('00 00 00 07 71 76 69 72 75 73 00')));
  });

  it('splits body data into ≤ 65535-byte packets', () => {
    const packets = encodeChunks(Command.BODY, Buffer.alloc(65535 * 2 + 10, 0x61));
    assert.deepEqual(packets.map((p) => p.readUInt32BE(0) - 1), [65535, 65535, 10]);
  });

  it('refuses a NUL inside a string field', () => {
    assert.throws(() => encodeStrings(Response.ADDHEADER, ['X-A', 'a\0b']), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_MALFORMED');
  });
});

describe('framing', () => {
  const stream = Buffer.concat([hex(N1), hex('00 00 00 0a 44 4c 69 00 34 58 79 5a 31 00'), hex('00 00 00 01 4e'), hex('00 00 00 08 42 48 65 6c 6c 6f 0d 0a')]);
  const expected = [Command.OPTNEG, Command.MACRO, Command.EOH, Command.BODY];

  function decodeIn(chunks: Buffer[]): number[] {
    const d = new FrameDecoder();
    const codes: number[] = [];
    for (const c of chunks) d.push(c, (code) => codes.push(code));
    d.finish();
    return codes;
  }

  it('decodes coalesced packets from one read', () => {
    assert.deepEqual(decodeIn([stream]), expected);
  });

  it('decodes byte-at-a-time delivery', () => {
    assert.deepEqual(decodeIn([...stream].map((b) => Buffer.from([b]))), expected);
  });

  it('decodes every split point of the stream', () => {
    for (let cut = 1; cut < stream.length; cut++) assert.deepEqual(decodeIn([stream.subarray(0, cut), stream.subarray(cut)]), expected, `cut at ${cut}`);
  });

  it('payload views stay correct when a packet is split across reads', () => {
    const d = new FrameDecoder();
    const payloads: string[] = [];
    const bytes = hex('00 00 00 08 42 48 65 6c 6c 6f 0d 0a 00 00 00 03 42 41 42');
    d.push(bytes.subarray(0, 7), (_c, p) => payloads.push(p.toString()));
    d.push(bytes.subarray(7), (_c, p) => payloads.push(p.toString()));
    assert.deepEqual(payloads, ['Hello\r\n', 'AB']);
  });

  it('pushRange hands over the same payloads as byte ranges, at every split point', () => {
    const viaViews: string[] = [];
    new FrameDecoder().push(stream, (code, p) => viaViews.push(`${code}:${p.toString('hex')}`));
    for (let cut = 0; cut < stream.length; cut++) {
      const d = new FrameDecoder();
      const got: string[] = [];
      const onFrame = (code: number, buf: Buffer, start: number, end: number) => got.push(`${code}:${buf.toString('hex', start, end)}`);
      if (cut > 0) d.pushRange(stream.subarray(0, cut), onFrame);
      d.pushRange(stream.subarray(cut), onFrame);
      d.finish();
      assert.deepEqual(got, viaViews, `cut at ${cut}`);
    }
  });

  it('readStrings reads a byte range of a larger buffer', () => {
    const buf = Buffer.concat([Buffer.from('xx\0'), Buffer.from('<a@b>\0SIZE=1\0'), Buffer.from('after\0')]);
    assert.deepEqual(readStrings(buf, 'utf8', 3, 16), ['<a@b>', 'SIZE=1']);
    // A last string without its NUL ends at the range's end, not at a later NUL.
    assert.deepEqual(readStrings(buf, 'utf8', 3, 6), ['<a@']);
  });

  it('rejects a zero length with a coded error', () => {
    assert.throws(() => new FrameDecoder().push(hex('00 00 00 00 41'), () => {}), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_ZERO_LENGTH');
  });

  it('rejects an oversize packet from its length field alone, before buffering it', () => {
    const d = new FrameDecoder(1024);
    assert.throws(() => d.push(hex('00 00 04 01'), () => {}), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_OVERSIZE');
  });

  it('accepts a 100 KiB header packet under the default 1 MiB limit', () => {
    const value = 'x'.repeat(100 * 1024);
    const packet = encodeStrings(Command.HEADER, ['X-Big', value]);
    let got = '';
    new FrameDecoder().push(packet, (_c, p) => (got = readHeader(p).value));
    assert.equal(got.length, value.length);
  });

  it('reports a stream that ends inside a packet', () => {
    const d = new FrameDecoder();
    d.push(hex('00 00 00 08 42 48'), () => assert.fail('no packet expected'));
    assert.throws(() => d.finish(), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_TRUNCATED');
  });
});
