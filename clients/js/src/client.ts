/**
 * The client: every rule of a session and its current connection (PROTOCOL.md §4, §5, §9.3,
 * §11) in one closure. It opens transports, runs the opening (§4.1), reads frames in order,
 * writes the control lane ahead of the application queue, keeps heartbeats, counts and
 * acknowledges application frames, replays them after a reconnection (§11.3), and gives the
 * application named, typed messages and requests.
 *
 * The session's state (resume counts and buffer, the application queue, pending requests)
 * outlives connections; each connection starts its own state afresh. Security
 * (`truflux/security`) and files (`truflux/files`) plug in through the options, so that a page
 * that does not use them does not ship them.
 */

import {
  ABNORMAL,
  BAD_RECORD,
  FILE_DECLINED,
  HANDSHAKE_FAILED,
  HANDSHAKE_TIMEOUT,
  HEARTBEAT_TIMEOUT,
  INVALID_PAYLOAD,
  MESSAGE_TOO_BIG,
  NO_COMMON_SUITE,
  NO_REPLY,
  NORMAL,
  POLICY_VIOLATION,
  PROTOCOL_ERROR,
  REQUEST_TIMEOUT,
  RESUME_FAILED,
  SLOW_CONSUMER,
  error,
  UNAUTHORIZED,
  UNKNOWN_MESSAGE,
  UNKNOWN_REQUEST,
  UNKNOWN_TRANSFER,
  UNTRUSTED_SERVER,
  VERSION_MISMATCH,
} from './code.js';
import { coded, encodeClose, parseClose } from './control.js';
import { decodeExact, frame, malformed, MAX_ID, wire, type Frame } from './frame.js';
import { helloFrame, parseAnswer, type Answer, type Credentials } from './hello.js';
import { messageId } from './ids.js';
import { ACK, CLOSE, ERROR, FILE_OFFER, FILE_REFUSE, HELLO, MESSAGE, PING, PONG, REPLY, REPLY_ERROR, REQUEST, SECURITY } from './kind.js';
import { decode, encode } from './msgpack.js';
import { concat, getUint, strict, uint, utf8 } from './octets.js';
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

/** What a plugin sees of the client. */
export interface Link {
  /** Queues a frame ahead of the application queue (answers, key exchange). A file frame is
   * counted (§11.3), so it goes out after what a resume sends again. */
  ctl(f: Frame): void;
  /** Queues a frame behind the application queue (a toggle, a file offer); throws when the
   * queue is full. */
  push(f: Frame): void;
  /** A fatal error: the connection closes with `code` (`ABNORMAL`: it is lost). */
  fail(code: number, reason?: string): void;
  emit(event: string, ...args: any[]): void;
  /** Writes what may be written now. */
  flush(): void;
}

/** The opening's frames, for a plugin that runs a keyed opening. */
export interface OpeningIo {
  /** Writes a frame at once, as it is. */
  send(f: Frame): void;
  /** The next frame; rejects when the transport ends first. */
  next(): Promise<Frame>;
}

/** One connection's security (`truflux/security`). */
export interface Sec {
  /** An arriving frame, through PROTOCOL.md §9.3's receiving table: opened if protected, and
   * handled here if it is a `SECURITY` frame (the client awaits the result before the next
   * frame). Resolves with the frame for the client to handle, or nothing; rejects with the
   * fatal `TrufluxError` due (`ABNORMAL` for a plain `CLOSE` in a keyed direction: the
   * connection is lost). */
  rx(f: Frame): Promise<Frame | void>;
  /** Writes `f` as our direction's rules say, sealed or not, through `w`, in order. */
  tx(f: Frame, w: (f: Frame) => void): void;
}

/** What `truflux/security` plugs in. */
export interface SecurityPlugin {
  /** Whether this opening exchanges keys first. */
  keyed(c: Credentials): boolean;
  /** A keyed opening. */
  open(io: OpeningIo, c: Credentials, link: Link): Promise<[Answer, Sec]>;
  /** After a plain opening (keys may still be exchanged later): `sent` and `got` are the
   * hello payloads the transcript starts with. */
  plain(sent: Uint8Array, got: Uint8Array, link: Link): Sec;
}

/** The file transfers of one connection (`truflux/files`). */
export interface Files {
  frame(f: Frame): void;
  /** The next chunk to send, if one is ready. */
  pull(): Frame | undefined;
  /** The connection ended: every transfer ends with it. */
  end(code: number, reason: string): void;
}

/** What `truflux/files` plugs in. */
export interface FilesPlugin {
  connect(link: Link): Files;
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
  /** Octets the transport may hold unsent before the queue waits. Default 1 MiB. The
   * transport may hold `highWater` + 2 × `maxPayload` at most: beyond, the server is not
   * reading what it provokes, and the connection closes with `SLOW_CONSUMER`. */
  highWater?: number;
  security?: SecurityPlugin;
  files?: FilesPlugin;
}

export interface Client {
  /** A lifecycle event listener (`connected`, `disconnected`, `reconnected`, `closed`,
   * `error`, and the plugins' events), or the handler of the message `name`. */
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
}

/** Lifecycle events; every other name given to `on` is a message name. */
const EVENTS = 'connected disconnected reconnected closed error handshaked failSecure secure peerSecure file'.split(' ');

/** Whether a close with `code` ends its session even where it could resume (§11.3). */
export const endsSession = (code: number) => [NORMAL, UNAUTHORIZED, VERSION_MISMATCH, POLICY_VIOLATION, RESUME_FAILED, UNTRUSTED_SERVER].includes(code);

/** Application and file frames: what a resumable session counts and sends again (§11.3). */
const counted = (kind: number) => kind > 15 && kind < 42;

const pack = (value: any, codec?: Codec) => (codec == 'raw' ? value : codec == 'text' ? utf8.encode(value) : encode(value));

function unpack(payload: Uint8Array, codec?: Codec): any {
  try {
    return codec == 'raw' ? payload : codec == 'text' ? strict.decode(payload) : decode(payload);
  } catch {
    throw error(INVALID_PAYLOAD);
  }
}

/** Connects through `connector`, and keeps the session going. */
export function connect(connector: Connector, o: ClientOptions = {}): Client {
  const now = Date.now;
  const mp = o.maxPayload ?? 0x1000000;
  const hw = o.highWater ?? 0x100000;
  const hb = o.heartbeat || {};
  const interval = o.heartbeat === false ? 0 : (hb.interval ?? 25000);
  const timeout = hb.timeout ?? 20000;
  const rc = o.reconnect === false ? 0 : (o.reconnect ?? {});
  const listeners: Record<string, Function[]> = {};
  /** Message handlers and request answerers, by id. */
  const handlers: Record<number, [Function, Name, Codec?]> = {};
  const answerers: Record<number, [Function, Name, Codec?]> = {};
  // The session.
  let state = 'connecting';
  let token: Uint8Array | undefined;
  let resumable = false;
  let received = 0;
  let acked = 0;
  /** The first frame of `outbox` is the session's frame number `base + 1`. */
  let base = 0;
  let octets = 0;
  /** Application frames written and not yet acknowledged, for a resume. */
  let outbox: Frame[] = [];
  const q: Frame[] = [];
  const pending = new Map<number, [(b: Uint8Array) => void, (e: Error) => void, any]>();
  let nextRequest = 0;
  let attempts = 0;
  let why: [number, string] = [ABNORMAL, ''];
  let trying: Transport | undefined;
  let again: any;
  // The connection: `t` while it is open.
  let t: Transport | undefined;
  let sec: Sec | undefined;
  let files: Files | undefined;
  let ctl: Frame[] = [];
  let replay: Frame[] = [];
  /** File answers (credit, pause, done, refusals): counted, so behind the replay. */
  const fq: Frame[] = [];
  let heard = 0;
  let pinged = false;
  let stopped = true;
  let shut = false;
  /** How the connection ended: code, reason, whether the session ends with it. */
  let end: [number, string, boolean] | undefined;
  let beat: any;
  let poll: any;
  let opened!: [() => void, (e: unknown) => void];
  let done!: (v: { code: number; reason: string }) => void;
  const closed = new Promise<{ code: number; reason: string }>((r) => (done = r));

  const idOf = (name: Name) => (typeof name == 'number' ? name : messageId(name));

  const emit = (name: string, ...args: any[]) => {
    for (const fn of listeners[name] ?? []) {
      try {
        fn(...args);
      } catch (e) {
        if (name != 'error') emit('error', e);
      }
    }
  };

  const forget = (n: number) => {
    for (const f of outbox.splice(0, n - base)) octets -= f.payload.length;
    base = n;
  };

  const drop = (code: number, reason?: string) => {
    for (const p of pending.values()) clearTimeout(p[2]), p[1](error(code, reason));
    pending.clear();
  };

  const record = (code: number, reason = '', ends: boolean) => (end ??= [code, reason, ends || !resumable]);

  const stop = () => {
    if (!stopped) (stopped = true), flush();
  };

  /** A fatal error; `ABNORMAL`: the connection is lost. */
  const fail = (code: number, reason?: string) => {
    record(code, reason, code != HEARTBEAT_TIMEOUT && code != ABNORMAL);
    emit('error', error(code, reason));
    stop();
  };

  /** A refused frame: `ERROR` to the server, an `error` event here; the connection goes on. */
  const refuse = (code: number, id: number) => {
    ctl.push(coded(ERROR, id, code));
    emit('error', error(code, '', id));
  };

  // ---- writing ---------------------------------------------------------------------------

  const push = (f: Frame, force?: boolean) => {
    if ((f.id & MAX_ID) !== f.id) throw error(PROTOCOL_ERROR);
    if (f.payload.length > mp) throw error(MESSAGE_TOO_BIG);
    // Replies go past the bound (their requests were taken in), up to twice the bound.
    if (q.length >= (o.queue ?? 1024) * (force ? 2 : 1)) throw error(SLOW_CONSUMER);
    q.push(f);
  };

  /** Writes a frame to `tr`; a `CLOSE` ends our side of it. */
  const out = (tr: Transport, f: Frame) => {
    try {
      // A plain close over WebSocket is the WebSocket close itself (§1); a sealed one is a
      // binary message, and the WebSocket close follows.
      if (f.kind != CLOSE || tr.stream || f.tag) tr.send(wire(f));
      if (f.kind == CLOSE) {
        const c = f.tag ? undefined : parseClose(f.payload);
        tr.close(c?.code, c?.reason);
        setTimeout(tr.abort, o.closeTimeout ?? 5000).unref?.();
      }
    } catch {
      tr.abort();
    }
  };

  const put = (f: Frame) => {
    const tr = t!;
    if (shut) return;
    shut = f.kind == CLOSE;
    sec ? sec.tx(f, (g) => out(tr, g)) : out(tr, f);
  };

  function flush() {
    const tr = t;
    let f: Frame | undefined;
    if (!tr) return;
    const room = () => tr.buffered < hw;
    // A lost connection is dropped; any other end sends its CLOSE (once).
    if (stopped) return end && (end[0] == ABNORMAL ? tr.abort() : put(coded(CLOSE, 0, end[0], end[1])));
    while (ctl.length) put(ctl.shift()!);
    while (room() && (f = replay.shift())) put(f);
    while (!shut && room() && outbox.length < (o.resumeBuffer ?? 4096) && octets < (o.resumeBytes ?? 0x1000000) && (f = fq.shift() ?? q.shift() ?? files?.pull())) {
      if (counted(f.kind) && resumable) octets += outbox.push(f) && f.payload.length;
      put(f);
    }
    // Frames the server provokes go out ahead of everything: a server that does not read them
    // fills the transport, and is cut off before it holds more than this.
    if (tr.buffered > hw + 2 * mp) fail(SLOW_CONSUMER);
    else if (!room())
      poll ??= setTimeout(() => {
        poll = undefined;
        flush();
      }, 5);
  }

  const ack = () => ctl.push(frame(ACK, uint((acked = received), 8)));

  const check = () => {
    const silent = now() - heard;
    if (stopped) return;
    if (silent >= interval + timeout) return fail(HEARTBEAT_TIMEOUT);
    if (silent >= interval && !pinged) {
      pinged = true;
      ctl.push(frame(PING));
      if (received > acked) ack();
      flush();
    }
    beat = setTimeout(check, interval + (pinged ? timeout : 0) - silent);
  };

  // ---- reading ---------------------------------------------------------------------------

  const onRequest = (id: number, request: number, body: Uint8Array) => {
    const a = answerers[id];
    const reply = (kind: number, payload: Uint8Array) => {
      // A reply can exceed the limits: tell the requester why.
      try {
        push(frame(kind, payload, request), true);
      } catch (e: any) {
        // A server that asks faster than it reads the replies is cut off.
        e.code == SLOW_CONSUMER ? fail(SLOW_CONSUMER) : push(coded(REPLY_ERROR, request, e.code), true);
      }
      flush();
    };
    new Promise((ok) => ok(a ? a[0](unpack(body, a[2]), { id, name: a[1], client }) : Promise.reject(error(NO_REPLY))))
      .then((value) => pack(value, a![2]))
      .then(
        (payload) => reply(REPLY, payload),
        (e) => reply(REPLY_ERROR, encodeClose(e?.code > 999 && e.code < 5000 ? e.code : NO_REPLY, String(e?.message ?? e))),
      );
  };

  /** One frame of the open connection, after §9.3; may return work to await. */
  const handle = (f: Frame): unknown => {
    const { kind: k, id, payload: p } = f;
    const h = handlers[id];
    const r = pending.get(id);
    // Only a client without keys meets a protected frame here: BAD_RECORD (§9.3).
    if (f.tag) throw error(BAD_RECORD);
    if (counted(k) && resumable && ++received - acked >= 32) ack();
    if (k == MESSAGE) {
      if (!h) return refuse(UNKNOWN_MESSAGE, id);
      try {
        // An async handler's failure is an error event too.
        h[0](unpack(p, h[2]), { id, name: h[1], client })?.catch?.((e: unknown) => emit('error', e));
      } catch (e: any) {
        if (e.code == INVALID_PAYLOAD) return refuse(INVALID_PAYLOAD, id);
        emit('error', e);
      }
    } else if (k == REQUEST) {
      const n = getUint(p, 0, 4);
      // A reply carries the request id in its 31-bit id field; a payload cut short reads NaN.
      if (!(n <= MAX_ID)) throw malformed();
      onRequest(id, n, p.subarray(4));
    } else if (k == REPLY || k == REPLY_ERROR) {
      const c = k == REPLY_ERROR && parseClose(p);
      if (!r) return refuse(UNKNOWN_REQUEST, id);
      pending.delete(id);
      clearTimeout(r[2]);
      c ? r[1](error(c.code, c.reason)) : r[0](p);
    } else if (k == PING) ctl.push(frame(PONG, p));
    else if (k == ACK) {
      // A count is read in place: one beyond what we wrote (beyond 2^53 too) is refused, as is
      // a payload that is not 8 octets.
      const n = getUint(p, 0, 8);
      if (!resumable || p.length != 8 || n > base + outbox.length) throw malformed();
      forget(Math.max(n, base));
    } else if (k == ERROR) {
      const c = parseClose(p);
      emit('error', error(c.code, c.reason, id));
    } else if (k == CLOSE) {
      let c = { code: PROTOCOL_ERROR, reason: '' };
      try {
        c = parseClose(p);
      } catch {}
      record(c.code, c.reason, endsSession(c.code));
      stop();
    } else if (k == HELLO) throw malformed();
    else if (k == SECURITY) {
      // Only a client without keys gets these: a plain toggle is BAD_RECORD (§9.3); START or
      // REQUEST, the server asks for a key exchange this client cannot make.
      if (id > 7 && id != 10) throw error(BAD_RECORD);
      if (id != 5 && id != 10) throw error(HANDSHAKE_FAILED);
      emit('error', error(NO_COMMON_SUITE));
    } else if (k != PONG) {
      if (files) return files.frame(f);
      if (k == FILE_OFFER) fq.push(coded(FILE_REFUSE, id, FILE_DECLINED));
      emit('error', error(UNKNOWN_TRANSFER, '', id));
    }
  };

  /** Reads the open connection until its transport ends. */
  const run = async (tr: Transport, next: () => Promise<Frame>) => {
    for (let over = false; !over; flush()) {
      try {
        let x: Frame;
        try {
          x = await next();
        } catch (c: any) {
          const [code, reason, e] = c;
          if (!Array.isArray(c)) throw c;
          over = true;
          // A stream that could not be cut into frames: ours to close (the socket still writes).
          if (e && code != ABNORMAL && !(e.truncated && resumable)) throw error(code, reason);
          if (tr.stream || e || code == ABNORMAL) {
            record(ABNORMAL, reason, false);
            stop();
            continue;
          }
          // A WebSocket close is the server's plain CLOSE (§1).
          x = frame(CLOSE, encodeClose(code, reason));
        }
        heard = now();
        pinged = false;
        if (stopped) continue;
        const f = sec ? await sec.rx(x) : x;
        if (f) await handle(f);
      } catch (e: any) {
        fail(e.code ?? PROTOCOL_ERROR);
      }
    }
    gone(tr);
  };

  // ---- connections -----------------------------------------------------------------------

  const link: Link = { ctl: (f) => (f.kind > 31 ? fq : ctl).push(f), push, fail, emit, flush };

  /** The transport ended: the connection is over; the session goes on or ends. */
  const gone = (tr: Transport) => {
    const [code, reason, ends] = end ?? [ABNORMAL, '', !resumable];
    if (tr != t) return;
    t = sec = undefined;
    clearTimeout(beat);
    // File transfers wait with the session, and end with it.
    if (ends || !rc) return finish(code, reason);
    state = 'reconnecting';
    why = [code, reason];
    emit('disconnected', code, reason);
    attempts = 0;
    retry();
  };

  const finish = (code: number, reason = '') => {
    if (state == 'closed') return;
    state = 'closed';
    drop(code, reason);
    files?.end(code, reason);
    q.length = fq.length = outbox.length = replay.length = 0;
    clearTimeout(again);
    clearTimeout(beat);
    trying?.abort();
    opened[1](error(code, reason));
    emit('closed', code, reason);
    done({ code, reason });
  };

  const retry = () => {
    const r = rc as { initialDelay?: number; maxDelay?: number; maxAttempts?: number };
    if (attempts >= (r.maxAttempts ?? 20)) return finish(...why);
    // Full jitter: anywhere between 0 and the capped delay.
    again = setTimeout(attempt, Math.random() * Math.min(r.maxDelay ?? 10000, (r.initialDelay ?? 100) * 2 ** attempts++), 1);
  };

  /** One connection attempt: transport, opening, then `run`. */
  const attempt = async (resume?: unknown) => {
    const plan: Credentials = {
      token: o.token,
      session: !!rc && !(resume && token),
      resume: resume && token ? { token, count: received } : undefined,
    };
    const keyed = !!o.security?.keyed(plan);
    const inq: (Uint8Array | [number, string, any])[] = [];
    let wake: (() => void) | undefined;
    let paused = false;
    let it: Transport | undefined;
    const events = {
      data(m: Uint8Array) {
        inq.push(m);
        wake?.();
        if (inq.length > 256 && !paused) it?.pause?.((paused = true));
      },
      close(code: number, reason: string, e?: unknown) {
        inq.push([code, reason, e]);
        wake?.();
      },
    };
    /** The next frame; throws [code, reason, error] when the transport ended. */
    const next = async () => {
      while (!inq.length) await new Promise<void>((r) => (wake = r));
      const m = inq.shift()!;
      if (paused && inq.length < 64) it?.pause?.((paused = false));
      if (Array.isArray(m)) throw m;
      return decodeExact(m, mp);
    };
    const limit = setTimeout(() => {
      events.close(HANDSHAKE_TIMEOUT, '', 1);
      it?.abort();
    }, o.connectTimeout ?? 10000);
    ctl = [];
    try {
      it = trying = await connector(events, mp, !keyed && o.token ? ['truflux.bearer.' + o.token] : []);
      if (state == 'closed') throw 0;
      const io: OpeningIo = { send: (f) => it!.send(wire(f)), next };
      let answer: Answer;
      let s: Sec | undefined;
      if (keyed) [answer, s] = await o.security!.open(io, plan, link);
      else {
        // Over WebSocket the token went in the subprotocol; over a stream it goes in the hello.
        if (!it.stream) plan.token = undefined;
        const hello = helloFrame(plan);
        io.send(hello);
        const f = await next();
        // A plain opening's close is the server's refusal.
        if (f.kind == CLOSE) {
          const c = parseClose(f.payload);
          throw error(c.code, c.reason);
        }
        if (f.kind != HELLO) throw malformed();
        answer = parseAnswer(f.payload);
        s = o.security?.plain(hello.payload, f.payload, link);
      }
      clearTimeout(limit);
      if (!plan.resume) (token = answer.session), (resumable = !!token);
      t = it;
      sec = s;
      files = o.files?.connect(link);
      heard = now();
      pinged = stopped = shut = false;
      end = undefined;
      replay = [];
      if (plan.resume) {
        const n = answer.resume!;
        // The server's count must fit what we wrote and still hold (§11.3).
        if (!(n >= base && n <= base + outbox.length)) fail(RESUME_FAILED);
        else forget(n), (replay = outbox.slice());
      }
      acked = received;
      if (interval) beat = setTimeout(check, interval);
      if (state == 'connecting') opened[0](), emit('connected');
      else emit('reconnected', attempts, !!plan.resume);
      state = 'open';
      flush();
      run(it, next);
    } catch (e: any) {
      clearTimeout(limit);
      if (Array.isArray(e)) {
        // The transport ended during the opening. A WebSocket close is the server's plain
        // CLOSE: believed in a plain opening, only a failed attempt in a keyed one (§4.1).
        const [code, reason, err] = e;
        e = error(err || !(keyed || it?.stream) ? code : ABNORMAL, reason);
      }
      // A refused WebSocket upgrade; only Node's ws says why.
      if (/ 401\b/.test(e?.message)) e = error(UNAUTHORIZED);
      const code = e?.code ?? ABNORMAL;
      if (it) code == ABNORMAL ? it.abort() : out(it, coded(CLOSE, 0, code));
      if (state == 'closed') return;
      if (code != ABNORMAL) emit('error', e);
      if (plan.resume && code == RESUME_FAILED && o.renew !== false) {
        // The server no longer knows the session: a new one, keeping the queue; pending
        // requests fail, and what was written but not acknowledged is gone.
        drop(RESUME_FAILED);
        // The old session's transfers end, and their frames go with them.
        files?.end(RESUME_FAILED, '');
        fq.length = 0;
        q.splice(0, q.length, ...q.filter((f) => f.kind < 32));
        received = acked = base = octets = 0;
        outbox = [];
        token = undefined;
        resumable = false;
        return attempt();
      }
      if (state == 'connecting' || !rc || endsSession(code)) return finish(code, e?.message);
      retry();
    }
  };

  const client: Client = {
    on(name, handler, codec) {
      if (EVENTS.includes(name as string)) (listeners[name] ??= []).push(handler);
      else handlers[idOf(name)] = [handler, name, codec];
      return client;
    },
    off(name, handler) {
      listeners[name] = (listeners[name] ?? []).filter((h) => h != handler);
      if (handlers[idOf(name)]?.[0] == handler) delete handlers[idOf(name)];
      return client;
    },
    send(name, value, codec) {
      if (state == 'closed') throw error(ABNORMAL);
      push(frame(MESSAGE, pack(value, codec), idOf(name)));
      flush();
    },
    request(name, value, { timeout, codec } = {}) {
      return new Promise<Uint8Array>((ok, no) => {
        let r = nextRequest;
        if (state == 'closed') throw error(ABNORMAL);
        while (pending.has(r)) r = (r + 1) & MAX_ID;
        nextRequest = (r + 1) & MAX_ID;
        push(frame(REQUEST, concat([uint(r, 4), pack(value, codec)]), idOf(name)));
        pending.set(r, [ok, no, setTimeout(() => pending.delete(r) && no(error(REQUEST_TIMEOUT)), timeout ?? o.requestTimeout ?? 30000)]);
        flush();
      }).then((body) => unpack(body, codec));
    },
    onRequest(name, handler, codec) {
      answerers[idOf(name)] = [handler, name, codec];
      return client;
    },
    close(code = NORMAL, reason = '') {
      if (t && !stopped) {
        record(code, reason, true);
        // Behind everything queued, whatever the queue's bound.
        q.push(coded(CLOSE, 0, code, reason));
        flush();
      } else finish(code, reason);
      return closed;
    },
    opened: new Promise<void>((ok, no) => (opened = [ok, no])),
    get state() {
      return state;
    },
  };
  client.opened.catch(() => {});
  attempt();
  return client;
}
