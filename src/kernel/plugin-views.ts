/**
 * What one plugin sees of a connection and its message: its hook context, its session and message
 * views, its notes, and the modification requests it may make (checked against its `modifies`).
 * The state behind the views is session-state.ts's.
 * @module
 */
import type { EnvelopeEvent, HeaderEvent, MessageModifier, MilterSession } from '../milter/index.ts';
import { ThemisError } from './errors.ts';
import type { LoadedPlugin } from './plugin-setup.ts';
import type { AppliedPolicy, HookContext, ModificationKind, Notes, PluginLogger, PluginMessage, PluginSession, RecipientState } from './plugin.ts';
import type { ConnectionState, MessageState } from './session-state.ts';

/** A plugin's notes in `map`: its own to read and write, every other plugin's to read. */
function notesOf(map: Map<string, unknown>, plugin: string): Notes {
  return {
    get: <T>() => map.get(plugin) as T | undefined,
    of: <T>(other: string) => map.get(other) as T | undefined,
    set: (value: unknown) => void map.set(plugin, value),
  };
}

/** The `modifies` kind each modification request needs. */
const MODIFICATION_OF: Record<string, ModificationKind> = {
  addHeader: 'headers',
  insertHeader: 'headers',
  changeHeader: 'headers',
  deleteHeader: 'headers',
  changeSender: 'sender',
  addRecipient: 'recipients',
  deleteRecipient: 'recipients',
  replaceBody: 'body',
};

/** A plugin's view of connection `id`, on the engine's session `s`, with its notes in `notes`. */
export function sessionView(id: number, s: MilterSession, notes: Map<string, unknown>, p: LoadedPlugin): PluginSession {
  // The engine's session object lives as long as the connection: read it through, never copy.
  return {
    id,
    get client() {
      return s.client;
    },
    get helo() {
      return s.helo;
    },
    get auth() {
      return s.macros.get('{auth_authen}') || undefined;
    },
    get mta() {
      return s.macros.get('j');
    },
    get macros() {
      return s.macros;
    },
    notes: notesOf(notes, p.name),
  };
}

/**
 * The message as one plugin sees it. A class rather than an object of closures: one is made per
 * plugin and message (and per abort or decision hook call), so its methods live on the prototype.
 */
export class MessageView implements PluginMessage {
  private readonly state: ConnectionState;
  private readonly plugin: LoadedPlugin;
  private readonly m: MessageState;
  readonly recipients: readonly RecipientState[];
  readonly headers: readonly HeaderEvent[];
  private notesView: Notes | undefined;

  constructor(state: ConnectionState, plugin: LoadedPlugin, m: MessageState) {
    this.state = state;
    this.plugin = plugin;
    this.m = m;
    this.recipients = m.recipients;
    this.headers = m.headers;
  }

  get sender(): EnvelopeEvent | undefined {
    return this.m.sender;
  }

  get queueId(): string | undefined {
    return this.m.queueId;
  }

  get notes(): Notes {
    return (this.notesView ??= notesOf(this.m.notes, this.plugin.name));
  }

  private request(kind: string, apply: (mod: MessageModifier) => void): void {
    const needed = MODIFICATION_OF[kind];
    if (!this.plugin.modifies.has(needed)) throw new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: this.plugin.name, reason: `${kind} needs modifies: ['${needed}'] in the plugin definition` });
    this.m.modifications.push({ plugin: this.plugin.name, apply });
  }

  addHeader(name: string, value: string): void {
    this.request('addHeader', (mod) => mod.addHeader(name, value));
  }

  insertHeader(index: number, name: string, value: string): void {
    this.request('insertHeader', (mod) => mod.insertHeader(index, name, value));
  }

  changeHeader(name: string, index: number, value: string): void {
    this.request('changeHeader', (mod) => mod.changeHeader(name, index, value));
  }

  deleteHeader(name: string, index: number): void {
    this.request('deleteHeader', (mod) => mod.deleteHeader(name, index));
  }

  changeSender(address: string, args?: readonly string[]): void {
    this.request('changeSender', (mod) => mod.changeSender(address, args));
  }

  addRecipient(address: string, args?: readonly string[]): void {
    this.request('addRecipient', (mod) => mod.addRecipient(address, args));
  }

  deleteRecipient(address: string): void {
    this.request('deleteRecipient', (mod) => mod.deleteRecipient(address));
  }

  replaceBody(body: Buffer | string): void {
    this.request('replaceBody', (mod) => mod.replaceBody(body));
  }

  skipPolicy(name: string): boolean {
    return this.state.skipPolicy(this.plugin.name, this.m, name);
  }

  addAuthenticationResult(result: string, options?: { authservId?: string }): void {
    if (!this.plugin.def.authenticates || !this.plugin.modifies.has('headers')) {
      throw new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: this.plugin.name, reason: "addAuthenticationResult needs authenticates: true and modifies: ['headers'] in the plugin definition" });
    }
    // One line of the header: no line breaks, no ';' that would start another result.
    const clean = result.replace(/[\r\n]+[ \t]*/g, ' ').trim();
    // A ';' inside a comment is text: strip the comments (escaped parentheses included) first.
    const bare = clean.replace(/\\./g, '').replace(/\([^()]*\)/g, '');
    if (clean === '' || bare.includes(';') || !/^[A-Za-z0-9-]+=/.test(clean)) {
      throw new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: this.plugin.name, reason: `not an RFC 8601 result (method=result …, no ';' outside a comment): ${JSON.stringify(result)}` });
    }
    this.m.authResults.push(clean);
    this.m.authservId ??= options?.authservId;
  }
}

/** A plugin's hook context on one connection; `message` is the current message's view for this plugin. */
export class HookContextView implements HookContext<unknown> {
  readonly session: PluginSession;
  readonly log: PluginLogger;
  private readonly state: ConnectionState;
  private readonly plugin: LoadedPlugin;
  private viewOf: MessageState | undefined;
  private view: PluginMessage | undefined;

  constructor(state: ConnectionState, plugin: LoadedPlugin) {
    this.state = state;
    this.plugin = plugin;
    this.session = state.sessionOf(plugin);
    this.log = plugin.log;
  }

  get policies(): readonly AppliedPolicy<unknown>[] {
    return this.state.policiesFor(this.plugin);
  }

  get message(): PluginMessage | undefined {
    const m = this.state.message;
    if (m === undefined) return undefined;
    if (m !== this.viewOf) {
      this.viewOf = m;
      this.view = this.state.messageView(this.plugin, m);
    }
    return this.view;
  }
}
