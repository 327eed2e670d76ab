// libmilter's macro scoping: a stage's command clears later stages; ABORT keeps the connection's.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Command, MacroStore } from '../../src/milter/index.ts';

describe('MacroStore', () => {
  it('finds names with or without braces', () => {
    const m = new MacroStore();
    m.set(Command.CONNECT, ['j', 'mx', '{daemon_name}', 'smtpd']);
    assert.equal(m.get('j'), 'mx');
    assert.equal(m.get('{j}'), 'mx');
    assert.equal(m.get('daemon_name'), 'smtpd');
    assert.equal(m.get('{daemon_name}'), 'smtpd');
    assert.equal(m.get('{nothing}'), undefined);
  });

  it('later stages shadow earlier ones; a stage command clears every later stage', () => {
    const m = new MacroStore();
    m.set(Command.CONNECT, ['j', 'mx', 'i', 'from-connect']);
    m.enterStage(Command.CONNECT);
    m.set(Command.MAIL, ['{mail_addr}', 'a@x']);
    m.enterStage(Command.MAIL);
    m.set(Command.RCPT, ['i', 'Q1', '{rcpt_addr}', 'b@x']);
    m.enterStage(Command.RCPT);
    assert.equal(m.get('i'), 'Q1');
    m.set(Command.DATA, ['i', 'Q2']);
    m.enterStage(Command.DATA);
    assert.equal(m.get('i'), 'Q2');
    // A new RCPT would clear DATA and later (not reachable in order, but the rule is libmilter's).
    m.set(Command.RCPT, ['{rcpt_addr}', 'c@x']);
    m.enterStage(Command.RCPT);
    assert.equal(m.get('i'), 'from-connect');
    assert.equal(m.get('{rcpt_addr}'), 'c@x');
    // HELO clears MAIL and later but keeps CONNECT's.
    m.enterStage(Command.HELO);
    assert.equal(m.get('{mail_addr}'), undefined);
    assert.equal(m.get('j'), 'mx');
  });

  it('keeps a MACRO packet given as a byte range of a larger read, decoding it on lookup', () => {
    const m = new MacroStore();
    // [junk][C j mx \0 {daemon_name} \0 smtpd \0][junk]: only the range is the packet.
    const packet = Buffer.from('Cj\0mx\0{daemon_name}\0smtpd\0', 'latin1');
    const read = Buffer.concat([Buffer.from('ZZ\0q\0'), packet, Buffer.from('i\0nope\0')]);
    m.setRange(read, 5, 5 + packet.length);
    assert.equal(m.get('j'), 'mx');
    assert.equal(m.get('daemon_name'), 'smtpd');
    assert.equal(m.get('i'), undefined);
    assert.equal(m.get('q'), undefined);
    // A packet with the command byte only empties its bucket.
    m.setRange(read, 5, 6);
    assert.equal(m.get('j'), undefined);
  });

  it('per-header and per-chunk macro packets (Postfix D L / D B) are dropped, as libmilter drops them; D N and D E count', () => {
    const m = new MacroStore();
    m.set(Command.DATA, ['i', 'Q2']);
    m.set(Command.HEADER, ['i', 'Q3']);
    m.enterStage(Command.HEADER);
    assert.equal(m.get('i'), 'Q2', 'the DATA macros, not the header packet');
    m.set(Command.BODY, ['i', 'Q4']);
    m.enterStage(Command.BODY);
    assert.equal(m.get('i'), 'Q2');
    m.set(Command.BODYEOB, ['i', 'Q5']);
    m.enterStage(Command.BODYEOB);
    assert.equal(m.get('i'), 'Q5');
    assert.deepEqual(m.toObject(), { i: 'Q5' });
  });

  it('a new MAIL keeps connection and HELO macros; D U is dropped, as libmilter drops it', () => {
    const m = new MacroStore();
    m.set(Command.CONNECT, ['j', 'mx']);
    m.set(Command.HELO, ['{tls_version}', 'TLSv1.3']);
    m.set(Command.MAIL, ['{auth_authen}', 'alice']);
    m.set(Command.UNKNOWN, ['{x}', 'y', '{auth_authen}', 'mallory']);
    assert.equal(m.get('{x}'), undefined);
    assert.equal(m.get('{auth_authen}'), 'alice');
    m.set(Command.MAIL, ['{mail_addr}', 'bob']);
    m.enterStage(Command.MAIL);
    assert.deepEqual(m.toObject(), { j: 'mx', '{tls_version}': 'TLSv1.3', '{mail_addr}': 'bob' });
    m.clearAll();
    assert.deepEqual(m.toObject(), {});
  });
});
