/**
 * The client: the driver around the engine (`engine.ts`). It opens transports, runs the
 * opening (PROTOCOL.md §4.1), feeds the engine what arrives, writes what it returns, keeps
 * its one timer, reconnects with backoff and resumes the session (§11.3), and gives the
 * application named, typed messages and requests.
 *
 * Security (`truflux/security`) and files (`truflux/files`) plug in through `security` and
 * `files` in the options, so that a page that does not use them does not ship them.
 */

import { ABNORMAL, HANDSHAKE_TIMEOUT, INVALID_PAYLOAD, NO_REPLY, NORMAL, RESUME_FAILED, TrufluxError, UNAUTHORIZED, UNKNOWN_MESSAGE } from './code.js';
import { encodeClose, parseClose } from './control.js';
import { engine, endsSession, coded, type End, type Engine, type Files, type Sec } from './engine.js';
import { decodeExact, encodeFrame, type Frame } from './frame.js';
import { helloFrame, parseAnswer, type Answer, type Credentials } from './hello.js';
import { messageId } from './ids.js';
import { CLOSE, ERROR, MESSAGE, REPLY, REPLY_ERROR } from './kind.js';
import { decode, encode } from './msgpack.js';
import { strict, utf8 } from './octets.js';
import type { Connector, Transport } from './transport.js';

/** How a message's value travels: MessagePack (the default), raw octets, or UTF-8 text. */
export type Codec = 'msgpack' | 'raw' | 'text';

/** A message or request name, or its numeric id. */
export type Name = string | number;

/** What a message handler gets besides the value. */
export interface MessageContext {
  id: number;
  name: Name;
  client: Client;
}

/** The opening's frames, for a plugin that runs a keyed opening. */
export interface OpeningIo {
  send(f: Frame): void;
  next(): Promise<Frame>;
  /** A byte stream (TCP, TLS), not a WebSocket. */
  stream: boolean;
}

/** One connection's security: the engine's rules, and the records' crypto. */
export interface SecurityConnection extends Sec {
  seal(f: Frame): Promise<Frame>;
  open(f: Frame): Promise<Frame>;
  /** The connection started (queues `SEC_ON` where it must be secure at once). */
  start(now: number): void;
}

/** What `truflux/security` plugs in. */
export interface SecurityPlugin {
  /** Whether this opening exchanges keys first. */
  keyed(c: Credentials): boolean;
  /** A keyed opening. */
  open(io: OpeningIo, c: Credentials, link: Link): Promise<{ answer: Answer; sec: SecurityConnection }>;
  /** After a plain opening: keys may still be exchanged later. `sent` and `got` are the hello
   * payloads (the transcript starts with them). */
  plain(sent: Uint8Array, got: Uint8Array, link: Link): SecurityConnection;
}

/** What `truflux/files` plugs in. */
export interface FilesPlugin {
  connect(link: Link): Files;
  /** The connection ended: every transfer ends with it. */
  end(code: number, reason: string): void;
}

/** What a plugin sees of the client. */
export interface Link {
  engine: Engine;
  emit(event: string, ...args: any[]): void;
  flush(): void;
  now(): number;
  /** The connection's transport, while it is open. */
  transport(): Transport | undefined;
}

export interface ClientOptions {
  /** Bearer token, presented on every connection (§11.1). */
  token?: string;
  /** Reconnection with resume. Default on: 100 ms doubling to 10 s with full jitter, 20
   * attempts per loss. `false`: a lost connection ends the client. */
  reconnect?: false | { initialDelay?: number; maxDelay?: number; maxAttempts?: number };
  /** When a reconnection finds the session gone (`RESUME_FAILED`, a restarted server), start a
   * new session instead of closing. Default true. */
  renew?: boolean;
  /** Heartbeats, ms: `PING` after `interval` of silence, lost after `timeout` more. Default
   * 25000 / 20000; `false`: none of ours (the server's are answered). */
  heartbeat?: false | { interval?: number; timeout?: number };
  /** Default request timeout, ms. Default 30000. */
  requestTimeout?: number;
  /** Transport connect plus opening, ms, each attempt. Default 10000. */
  connectTimeout?: number;
  /** How long a close waits for the server's answering close, ms. Default 5000. */
  closeTimeout?: number;
  /** Largest frame payload either way. Default 16 MiB. */
  maxPayload?: number;
  /** Frames the outbound (and offline) queue holds. Default 1024; full: `send` throws. */
  queue?: number;
  /** Resume buffer: frames, octets. Default 4096 / 16 MiB. */
  resumeBuffer?: number;
  resumeBytes?: number;
  /** Octets the transport may hold unsent before the queue waits. Default 1 MiB. */
  highWater?: number;
  security?: SecurityPlugin;
  files?: FilesPlugin;
}

/** Lifecycle events; every other name given to `on` is a message name. */
const EVENTS = ['connected', 'disconnected', 'reconnected', 'closed', 'error', 'handshaked', 'failSecure', 'secure', 'peerSecure', 'file'];

export interface Client {
  /** A lifecycle event listener (`connected`, `disconnected`, `reconnected`, `closed`,
   * `error`, and the plugins' events), or a handler of the message `name`. */
  on(name: Name, handler: (...args: any[]) => void, codec?: Codec): Client;
  off(name: Name, handler: (...args: any[]) => void): Client;
  /** Sends `value` as the message `name`. Queued while disconnected; throws a
   * `TrufluxError` when the queue is full or the client is closed. */
  send(name: Name, value?: unknown, codec?: Codec): void;
  /** Sends a request; resolves with the decoded reply. */
  request(name: Name, value?: unknown, options?: { timeout?: number; codec?: Codec }): Promise<any>;
  /** Answers requests `name` with what `handler` returns (or resolves to). */
  onRequest(name: Name, handler: (value: any, ctx: MessageContext) => unknown, codec?: Codec): Client;
  /** Closes gracefully; resolves with how the session ended. */
  close(code?: number, reason?: string): Promise<{ code: number; reason: string }>;
  /** Resolves once the first connection is open; rejects if the client closes first. */
  readonly opened: Promise<void>;
  /** `connecting`, `open`, `reconnecting` or `closed`. */
  readonly state: string;
  readonly link: Link;
}

const idOf = (name: Name) => (typeof name === 'number' ? name : messageId(name));

function pack(value: unknown, codec?: Codec): Uint8Array {
  return codec === 'raw' ? (value as Uint8Array) : codec === 'text' ? utf8.encode(value as string) : encode(value);
}

function unpack(payload: Uint8Array, codec?: Codec): unknown {
  try {
    return codec === 'raw' ? payload : codec === 'text' ? strict.decode(payload) : decode(payload);
  } catch {
    throw new TrufluxError(INVALID_PAYLOAD, 'payload does not decode');
  }
}

/** Connects through `connector`, and keeps the session going. */
export function connect(connector: Connector, o: ClientOptions = {}): Client {
  const now = () => Date.now();
  const mp = o.maxPayload ?? 0x1000000;
  const hw = o.highWater ?? 0x100000;
  const hb = o.heartbeat === false ? {} : o.heartbeat ?? {};
  const rc = o.reconnect === false ? undefined : o.reconnect ?? {};
  const listeners: Record<string, Function[]> = {};
  const handlers = new Map<number, [Function, Name, Codec?]>();
  const answerers = new Map<number, [Function, Name, Codec?]>();
  let state = 'connecting';
  let t: Transport | undefined;
  let sec: SecurityConnection | undefined;
  let token: Uint8Array | undefined;
  let inq: (Frame | (() => void))[] = [];
  let pumping = false;
  let chain: Promise<unknown> | undefined;
  let timer: any;
  let timerAt = Infinity;
  let poll: any;
  let closer: any;
  let again: any;
  let trying: Transport | undefined;
  let attempts = 0;
  let opened!: [() => void, (e: unknown) => void];
  let closed!: (v: { code: number; reason: string }) => void;
  const done = new Promise<{ code: number; reason: string }>((r) => (closed = r));

  const emit = (name: string, ...args: any[]) => {
    for (const fn of listeners[name] ?? []) {
      try {
        fn(...args);
      } catch (error) {
        if (name !== 'error') emit('error', error);
      }
    }
  };

  const E = engine(
    {
      hb: o.heartbeat === false ? 0 : hb.interval ?? 25000,
      hbt: hb.timeout ?? 20000,
      queue: o.queue ?? 1024,
      rf: o.resumeBuffer ?? 4096,
      ro: o.resumeBytes ?? 0x1000000,
      maxPayload: mp,
    },
    (event, a, b, c) => {
      if (event === 'message') onMessage(a, b);
      else if (event === 'request') onRequest(a, b, c);
      else if (event === 'end') flush();
      else emit(event, a);
    },
  );

  const ctx = (id: number, name: Name): MessageContext => ({ id, name, client });

  function onMessage(id: number, payload: Uint8Array) {
    const h = handlers.get(id);
    if (!h) {
      E.ctl(coded(ERROR, id, UNKNOWN_MESSAGE, 'no handler'));
      return emit('error', new TrufluxError(UNKNOWN_MESSAGE, `no handler for message ${id}`));
    }
    try {
      h[0](unpack(payload, h[2]), ctx(id, h[1]));
    } catch (error: any) {
      if (error.code === INVALID_PAYLOAD) E.ctl(coded(ERROR, id, INVALID_PAYLOAD, error.message));
      emit('error', error);
    }
  }

  function onRequest(id: number, request: number, body: Uint8Array) {
    const a = answerers.get(id);
    const reply = (kind: number, payload: Uint8Array) => {
      // A reply can exceed the limits or find the session over: tell the requester why.
      try {
        E.push({ kind, id: request, payload }, true);
      } catch (error: any) {
        E.push(coded(REPLY_ERROR, request, error.code, error.message), true);
      }
      flush();
    };
    new Promise((ok) => {
      if (!a) throw new TrufluxError(NO_REPLY, 'no request handler');
      ok(a[0](unpack(body, a[2]), ctx(id, a[1])));
    }).then(
      (value) => reply(REPLY, pack(value, a![2])),
      (error) => reply(REPLY_ERROR, encodeClose(error?.code > 999 && error.code < 5000 ? error.code : NO_REPLY, String(error?.message ?? error))),
    );
  }

  // ---- writing ---------------------------------------------------------------------------

  function write(f: Frame, sealed: boolean) {
    // Each write keeps its transport: a connection that ends still gets its last frames.
    const tr = t!;
    if (!(sealed || chain)) return out(f, tr);
    const p = sealed ? sec!.seal(f) : f;
    const c = (chain = (chain ?? Promise.resolve()).then(() => p).then((g) => out(g, tr), (e) => E.fail(e.code, e.message)));
    c.then(() => chain === c && (chain = undefined));
  }

  function out(f: Frame, t: Transport) {
    try {
      if (f.kind !== CLOSE) return t.send(encodeFrame(f, mp));
      const c = parseClose(f.payload);
      // A plain close over WebSocket is the WebSocket close itself (§1); a sealed one is a frame.
      if (t.stream || f.tag) t.send(encodeFrame(f, mp));
      t.close(c.code, c.reason);
      closer ??= setTimeout(() => t.abort(), o.closeTimeout ?? 5000);
    } catch {
      t.abort();
    }
  }

  function flush() {
    arm();
    if (!t || state === 'connecting' || state === 'reconnecting') return;
    const tr = t;
    for (const [f, s] of E.take(now(), () => tr.buffered < hw)) write(f, s);
    if (tr.buffered >= hw && E.queued) poll ??= setTimeout(() => {
      poll = undefined;
      flush();
    }, 5);
  }

  function arm() {
    const at = E.due();
    if (at < timerAt) {
      clearTimeout(timer);
      timerAt = at;
      timer = setTimeout(fire, Math.min(at - now(), 0x7fffffff));
    }
  }

  function fire() {
    timerAt = Infinity;
    E.tick(now());
    flush();
    arm();
  }

  // ---- reading ---------------------------------------------------------------------------

  async function pump() {
    if (pumping) return;
    pumping = true;
    while (inq.length) {
      const x = inq.shift()!;
      try {
        if (typeof x === 'function') x();
        else {
          const f = x.tag && sec ? await sec.open(x) : x;
          const job = E.frame(f, !!x.tag, now());
          if (job) await job;
        }
      } catch (error: any) {
        E.fail(error.code ?? ABNORMAL, error.message);
      }
      flush();
      if (inq.length < 64) t?.pause?.(false);
    }
    pumping = false;
  }

  // ---- connections -----------------------------------------------------------------------

  const link: Link = { engine: E, emit, flush, now, transport: () => t };

  /** The transport ended: the connection is over; the session goes on or ends. */
  function gone(it: Transport) {
    if (it !== t) return;
    clearTimeout(closer);
    closer = t = sec = undefined;
    inq = [];
    const end = E.end() ?? { code: ABNORMAL, reason: 'connection lost', local: false, ends: !E.resumable };
    o.files?.end(end.code, end.reason);
    if (end.ends || !rc || state === 'closed') return finish(end);
    state = 'reconnecting';
    emit('disconnected', end.code, end.reason);
    attempts = 0;
    retry();
  }

  function finish(end: End) {
    if (state === 'closed' && !closed) return;
    state = 'closed';
    clearTimeout(timer);
    clearTimeout(poll);
    clearTimeout(again);
    E.finish(end);
    trying?.abort();
    opened[1](new TrufluxError(end.code, end.reason));
    emit('closed', end.code, end.reason);
    closed({ code: end.code, reason: end.reason });
    closed = undefined!;
  }

  function retry() {
    const max = rc!.maxAttempts ?? 20;
    if (attempts >= max) {
      const end = E.end()!;
      return finish({ ...end, reason: `${end.reason} (gave up after ${attempts} attempts)` });
    }
    const cap = Math.min(rc!.maxDelay ?? 10000, (rc!.initialDelay ?? 100) * 2 ** attempts++);
    // Full jitter: anywhere between 0 and the capped delay.
    again = setTimeout(() => attempt(true), Math.random() * cap);
  }

  /** One connection attempt: transport, opening, then the engine takes over. */
  async function attempt(resume: boolean) {
    const plan: Credentials = {
      token: o.token,
      session: !!rc && !(resume && token),
      resume: resume && token ? { token, count: E.received } : undefined,
    };
    const keyed = !!o.security?.keyed(plan);
    let it: Transport | undefined;
    const got: Frame[] = [];
    let wake: (() => void) | undefined;
    let failed: TrufluxError | undefined;
    /** A close that came while the opening finished: replayed once the connection runs. */
    let early: [number, string, unknown] | undefined;
    const events = {
      data(octets: Uint8Array) {
        if (it !== t && t) return;
        let f: Frame;
        try {
          f = decodeExact(octets, mp);
        } catch (error: any) {
          return events.close(error.code, error.message, error);
        }
        if (state === 'open' && it === t) {
          inq.push(f);
          if (inq.length > 256) it?.pause?.(true);
          pump();
        } else got.push(f), wake?.();
      },
      close(code: number, reason: string, error?: unknown) {
        const ws = it && !it.stream && !error && code !== ABNORMAL;
        if (state !== 'open' || it !== t) {
          // During the opening a WebSocket close is the server's plain close: a refusal in a
          // plain opening, only a failed attempt in a keyed one (§4.1).
          failed ??= Object.assign(new TrufluxError(ws ? code : ABNORMAL, reason || 'connection closed'), { refused: ws && !keyed });
          early = [code, reason, error];
          return wake?.();
        }
        inq.push(() => {
          // A stream that could not be cut into frames: ours to close (the socket still writes).
          if (error && code !== ABNORMAL && !((error as any).truncated && E.resumable)) E.fail(code, reason);
          // A WebSocket close is the peer's plain CLOSE (§1).
          else if (ws) E.frame({ kind: CLOSE, id: 0, payload: encodeClose(code, reason) }, false, now());
          else E.lost(reason || 'connection lost');
          gone(it!);
        });
        pump();
      },
    };
    const io: OpeningIo = {
      send: (f) => it!.send(encodeFrame(f, mp)),
      next: async () => {
        while (!got.length) {
          if (failed) throw failed;
          await new Promise<void>((r) => (wake = r));
        }
        return got.shift()!;
      },
      stream: true,
    };
    const limit = setTimeout(() => {
      failed = new TrufluxError(HANDSHAKE_TIMEOUT, 'the opening took too long');
      it?.abort();
      wake?.();
    }, o.connectTimeout ?? 10000);
    try {
      it = trying = await connector(events, mp, !keyed && o.token ? [`truflux.bearer.${o.token}`] : []);
      if (state === 'closed' || failed) throw failed ?? new TrufluxError(NORMAL, 'closed');
      io.stream = it.stream;
      let answer: Answer;
      let s: SecurityConnection | undefined;
      if (keyed) ({ answer, sec: s } = await o.security!.open(io, plan, link));
      else {
        // Over WebSocket the token went in the subprotocol; over a stream it goes in the hello.
        if (!it.stream) plan.token = undefined;
        const hello = helloFrame(plan);
        io.send(hello);
        const f = await io.next();
        if (f.kind === CLOSE) throw refusal(f);
        answer = parseAnswer(f.payload);
        s = o.security?.plain(hello.payload, f.payload, link);
      }
      clearTimeout(limit);
      start(it, answer, s, plan, got);
      if (early) events.close(...early);
    } catch (error: any) {
      clearTimeout(limit);
      it?.abort();
      failedAttempt(error, plan);
    }
  }

  function refusal(f: Frame) {
    const c = parseClose(f.payload);
    return Object.assign(new TrufluxError(c.code, c.reason), { refused: true });
  }

  function failedAttempt(error: any, plan: Credentials) {
    if (state === 'closed') return;
    // A refused WebSocket upgrade; only Node's ws says why.
    if (/ 401\b/.test(error.message)) error = Object.assign(new TrufluxError(UNAUTHORIZED, error.message), { refused: true });
    const code = error.code ?? ABNORMAL;
    const resuming = !!plan.resume;
    if (resuming && code === RESUME_FAILED && error.refused && o.renew !== false) {
      E.renew();
      token = undefined;
      return attempt(false);
    }
    if (state === 'connecting' || (error.refused && endsSession(code)) || !rc) {
      return finish({ code, reason: error.message, local: !error.refused, ends: true });
    }
    retry();
  }

  function start(it: Transport, answer: Answer, s: SecurityConnection | undefined, plan: Credentials, got: Frame[]) {
    const resumed = !!plan.resume;
    if (!resumed) {
      token = answer.session;
      E.resumable = !!token;
    }
    t = it;
    sec = s;
    try {
      if (resumed && answer.resume === undefined) throw new TrufluxError(RESUME_FAILED, 'the server did not resume');
      E.open(now(), s, o.files?.connect(link), resumed ? answer.resume : undefined);
    } catch (error: any) {
      E.open(now(), s);
      E.fail(error.code, error.message);
    }
    s?.start(now());
    const first = state === 'connecting';
    state = 'open';
    inq.push(...got.splice(0));
    if (first) {
      opened[0]();
      emit('connected');
    } else emit('reconnected', attempts, resumed);
    pump();
    flush();
  }

  const client: Client = {
    on(name, handler, codec) {
      if (typeof name === 'string' && EVENTS.includes(name)) (listeners[name] ??= []).push(handler);
      else handlers.set(idOf(name), [handler, name, codec]);
      return client;
    },
    off(name, handler) {
      listeners[name] = (listeners[name] ?? []).filter((h) => h !== handler);
      if (handlers.get(idOf(name))?.[0] === handler) handlers.delete(idOf(name));
      return client;
    },
    send(name, value, codec) {
      if (state === 'closed') throw new TrufluxError(ABNORMAL, 'the client is closed');
      E.push({ kind: MESSAGE, id: idOf(name), payload: pack(value, codec) });
      flush();
    },
    request(name, value, options = {}) {
      if (state === 'closed') return Promise.reject(new TrufluxError(ABNORMAL, 'the client is closed'));
      const p = E.request(idOf(name), pack(value, options.codec), options.timeout ?? o.requestTimeout ?? 30000, now());
      flush();
      return p.then((body) => unpack(body, options.codec));
    },
    onRequest(name, handler, codec) {
      answerers.set(idOf(name), [handler, name, codec]);
      return client;
    },
    close(code = NORMAL, reason = '') {
      if (state === 'open') {
        E.close(code, reason);
        flush();
      } else finish({ code, reason, local: true, ends: true });
      return done;
    },
    opened: new Promise<void>((ok, no) => (opened = [ok, no])),
    get state() {
      return state;
    },
    link,
  };
  client.opened.catch(() => {});
  attempt(false);
  return client;
}
