/**
 * The connection engine: every rule of a session and its current connection (PROTOCOL.md §4,
 * §9.3, §11), as a synchronous state machine with no sockets, no timers and no clock: the
 * driver feeds it frames that arrived (`frame`), application frames (`push`), the time
 * (`tick`), and writes what `take` returns; `due` says when to call `tick` next. What it
 * reports goes to the `emit` callback, synchronously.
 *
 * The session's state (resume counts and buffer, the application queue, pending requests)
 * outlives connections; `open` starts each connection's state afresh. Security and file
 * transfers plug in through `Sec` and `Files` (from `truflux/security` and `truflux/files`),
 * so that a page without them does not ship their rules.
 */

import {
  ABNORMAL,
  BAD_RECORD,
  FILE_DECLINED,
  HANDSHAKE_FAILED,
  HEARTBEAT_TIMEOUT,
  MESSAGE_TOO_BIG,
  NO_COMMON_SUITE,
  NORMAL,
  POLICY_VIOLATION,
  PROTOCOL_ERROR,
  REQUEST_TIMEOUT,
  RESUME_FAILED,
  SLOW_CONSUMER,
  TrufluxError,
  UNAUTHORIZED,
  UNKNOWN_REQUEST,
  UNKNOWN_TRANSFER,
  UNTRUSTED_SERVER,
  VERSION_MISMATCH,
} from './code.js';
import { encodeAck, encodeClose, encodeRequest, parseAck, parseClose, parseRequest } from './control.js';
import { malformed, MAX_ID, type Frame } from './frame.js';
import { ACK, CLOSE, ERROR, FILE_OFFER, FILE_REFUSE, HELLO, MESSAGE, PING, PONG, REPLY, REQUEST, SECURITY } from './kind.js';

/** A frame to write and whether to seal it. */
export type Out = [Frame, boolean];
/** A queued frame, or a step to run where it stands in the queue (keys installed, say). */
export type Item = Frame | (() => void);

/** The security rules of one connection (`truflux/security`). */
export interface Sec {
  /** PROTOCOL.md §9.3's receiving table: `true` when the frame means the connection is lost
   * (a plain `CLOSE` in a keyed direction); throws the fatal `TrufluxError` otherwise due. */
  rx(f: Frame, sealed: boolean): boolean;
  /** A `SECURITY` frame; a promise the driver awaits before the next frame (a key exchange). */
  on(f: Frame, now: number): Promise<unknown> | void;
  /** Appends `f` to `out` as our direction's rules say (sealed or not, a `REKEY` after it). */
  tx(f: Frame, out: Out[], now: number): void;
  /** Nothing but control frames may go out yet (our `SEC_ON` has not). */
  hold(): boolean;
}

/** The file transfers of one connection (`truflux/files`). */
export interface Files {
  frame(f: Frame): void;
  /** The next chunk to send, if one is ready. */
  pull(): Frame | undefined;
}

/** How a connection ended; `ends`: the session ends with it. */
export interface End {
  code: number;
  reason: string;
  local: boolean;
  ends: boolean;
}

export interface EngineOptions {
  /** Heartbeat interval and timeout, ms; interval 0: no heartbeats of ours. */
  hb: number;
  hbt: number;
  /** Most frames in the application queue. */
  queue: number;
  /** Resume buffer: frames, octets. */
  rf: number;
  ro: number;
  maxPayload: number;
}

export type Emit = (event: string, a?: any, b?: any, c?: any) => void;

export interface Engine {
  /** A frame from the peer; `sealed`: it arrived protected (and was opened). */
  frame(f: Frame, sealed: boolean, now: number): Promise<unknown> | void;
  /** Queues an application frame (or a marker) behind the queue; throws when full unless
   * `force` (a reply: the request it answers was already taken in). */
  push(x: Item, force?: boolean): void;
  /** Queues a frame ahead of the queue (answers, acknowledgements, key exchange). */
  ctl(x: Item): void;
  /** The frames to write now; `room()` says whether the transport takes more of the queue. */
  take(now: number, room: () => boolean): Out[];
  tick(now: number): void;
  /** When `tick` must run next (ms, the driver's clock); Infinity for never. */
  due(): number;
  /** Sends a request; resolves with the reply body. */
  request(id: number, body: Uint8Array, timeout: number, now: number): Promise<Uint8Array>;
  /** Starts a connection; `count`: the peer's received count on a resume. */
  open(now: number, sec?: Sec, files?: Files, count?: number): void;
  /** Graceful close: `CLOSE` after everything queued. */
  close(code: number, reason: string): void;
  /** A fatal error found here or by the driver. */
  fail(code: number, reason: string): void;
  /** The stream ended or broke without a close frame. */
  lost(reason: string): void;
  /** The session ended: pending requests fail, the queue is dropped. */
  finish(e: End): void;
  /** The server no longer knows the session: start a new one, keeping the queue; pending
   * requests fail and what was written but not acknowledged is dropped. */
  renew(): void;
  /** Frames wait in the queue. */
  readonly queued: number;
  /** How the connection ended, once it has. */
  end(): End | undefined;
  /** The server granted a resumable session. */
  resumable: boolean;
  /** Application frames received in the session. */
  readonly received: number;
  /** Frames written and not acknowledged (what a new session would lose). */
  readonly unacked: number;
}

/** Whether a close with `code` ends its session even where it could resume (§11.3). */
export const endsSession = (code: number) =>
  [NORMAL, UNAUTHORIZED, VERSION_MISMATCH, POLICY_VIOLATION, RESUME_FAILED, UNTRUSTED_SERVER].includes(code);

const isApp = (kind: number) => kind > 15 && kind < 20;
const ACK_EVERY = 32;

/** A frame of `kind` with a code and reason (`CLOSE`, `ERROR`, `REPLY_ERROR`, `FILE_*`). */
export const coded = (kind: number, id: number, code: number, reason: string): Frame => ({ kind, id, payload: encodeClose(code, reason) });

export function engine(o: EngineOptions, emit: Emit): Engine {
  // The session.
  let rcvd = 0;
  let acked = 0;
  let ackDue = false;
  /** The first frame of `outbox` is the session's frame number `base + 1`. */
  let base = 0;
  let octets = 0;
  const outbox: Frame[] = [];
  const q: Item[] = [];
  const pending = new Map<number, { t: number; ok: (b: Uint8Array) => void; no: (e: Error) => void }>();
  let nextRequest = 0;
  // The connection.
  let sec: Sec | undefined;
  let files: Files | undefined;
  let ctl: Item[] = [];
  let replay: Frame[] = [];
  let heard = 0;
  let pingSent = false;
  let pingDue = false;
  let ended: End | undefined;
  let stopped = true;
  let closeSent = false;

  const written = () => base + outbox.length;

  const record = (code: number, reason: string, local: boolean, ends: boolean) => {
    ended ??= { code, reason, local, ends: ends || !e.resumable };
  };

  const stop = () => {
    if (!stopped) emit('end', (stopped = true));
  };

  const forget = (n: number) => {
    for (; base < n; base++) octets -= outbox.shift()!.payload.length;
  };

  const answer = (f: Frame) => {
    const p = pending.get(f.id);
    const error = f.kind !== REPLY && parseClose(f.payload);
    if (!p) {
      ctl.push(coded(ERROR, f.id, UNKNOWN_REQUEST, 'no such request'));
      return emit('error', new TrufluxError(UNKNOWN_REQUEST, `no pending request ${f.id}`));
    }
    pending.delete(f.id);
    if (error) p.no(new TrufluxError(error.code, error.reason));
    else p.ok(f.payload);
  };

  /** Without `truflux/security`: no keys, ever. */
  const plainRx = (f: Frame, sealed: boolean) => {
    if (sealed || (f.kind === SECURITY && (f.id === 8 || f.id === 9 || f.id === 11))) {
      throw new TrufluxError(BAD_RECORD, 'protected record before keys');
    }
    return false;
  };

  const plainSecurity = (f: Frame) => {
    // START, or a REQUEST: the peer asks for a key exchange this client cannot make.
    if (f.id !== 5 && f.id !== 10) throw new TrufluxError(HANDSHAKE_FAILED, 'unexpected handshake message');
    emit('error', new TrufluxError(NO_COMMON_SUITE, 'no security suite here'));
  };

  const plainFile = (f: Frame) => {
    if (f.kind === FILE_OFFER) ctl.push(coded(FILE_REFUSE, f.id, FILE_DECLINED, 'no files here'));
    emit('error', new TrufluxError(UNKNOWN_TRANSFER, `file frame for transfer ${f.id}`));
  };

  const handle = (f: Frame, now: number) => {
    const k = f.kind;
    if (isApp(k) && e.resumable && ++rcvd - acked >= ACK_EVERY) ackDue = true;
    if (k === MESSAGE) emit('message', f.id, f.payload);
    else if (k === REQUEST) {
      const r = parseRequest(f.payload);
      emit('request', f.id, r.requestId, r.body);
    } else if (k === REPLY || k === REPLY + 1) answer(f);
    else if (k === PING) ctl.push({ kind: PONG, id: 0, payload: f.payload });
    else if (k === ACK) {
      const n = parseAck(f.payload);
      if (!e.resumable || n > written()) throw malformed('acknowledgement does not fit');
      forget(n);
    } else if (k === ERROR) {
      const r = parseClose(f.payload);
      emit('error', Object.assign(new TrufluxError(r.code, r.reason), { id: f.id }));
    } else if (k === CLOSE) {
      let c = { code: PROTOCOL_ERROR, reason: 'malformed close frame' };
      try {
        c = parseClose(f.payload);
      } catch {}
      record(c.code, c.reason, false, endsSession(c.code));
      stop();
    } else if (k === HELLO) throw malformed('hello after the opening');
    else if (k === SECURITY) return sec ? sec.on(f, now) : plainSecurity(f);
    else if (k !== PONG) files ? files.frame(f) : plainFile(f);
  };

  const e: Engine = {
    resumable: false,
    get received() {
      return rcvd;
    },
    get unacked() {
      return outbox.length;
    },
    get queued() {
      return q.length;
    },

    frame(f, sealed, now) {
      if (stopped) return;
      heard = now;
      pingSent = false;
      try {
        if ((sec ? sec.rx : plainRx)(f, sealed)) return e.lost('a plain close after keys');
        return handle(f, now);
      } catch (error: any) {
        e.fail(error.code ?? PROTOCOL_ERROR, error.message);
      }
    },

    push(x, force) {
      if (typeof x !== 'function' && !(x.payload.length <= o.maxPayload && x.id >= 0 && x.id <= MAX_ID)) {
        throw new TrufluxError(x.id > MAX_ID ? PROTOCOL_ERROR : MESSAGE_TOO_BIG, 'frame over the limits');
      }
      if (q.length >= o.queue && !force) throw new TrufluxError(SLOW_CONSUMER, 'queue full');
      q.push(x);
    },

    ctl: (x) => void ctl.push(x),

    take(now, room) {
      const out: Out[] = [];
      const put = (x: Item) => (typeof x === 'function' ? x() : sec ? sec.tx(x, out, now) : void out.push([x, false]));
      while (ctl.length) put(ctl.shift()!);
      if (stopped) {
        if (ended && ended.code !== ABNORMAL && !closeSent) {
          closeSent = true;
          put(coded(CLOSE, 0, ended.code, ended.reason));
        }
        return out;
      }
      if (pingDue) put({ kind: PING, id: 0, payload: new Uint8Array((pingDue = false) as any) });
      if (ackDue) {
        ackDue = false;
        put({ kind: ACK, id: 0, payload: encodeAck((acked = rcvd)) });
      }
      if (sec?.hold()) return out;
      while (replay.length) put(replay.shift()!);
      while (!closeSent && room() && outbox.length < o.rf && octets < o.ro) {
        const x = q.shift() ?? files?.pull();
        if (!x) break;
        if (typeof x !== 'function') {
          if (isApp(x.kind) && e.resumable) octets += outbox.push(x) && x.payload.length;
          closeSent = x.kind === CLOSE;
        }
        put(x);
      }
      return out;
    },

    tick(now) {
      for (const [id, p] of pending) {
        if (p.t <= now) {
          pending.delete(id);
          p.no(new TrufluxError(REQUEST_TIMEOUT, 'request timed out'));
        }
      }
      if (stopped || !o.hb) return;
      const silent = now - heard;
      if (silent >= o.hb + o.hbt) e.fail(HEARTBEAT_TIMEOUT, 'heartbeat timeout');
      else if (silent >= o.hb && !pingSent) {
        pingSent = pingDue = true;
        if (rcvd > acked) ackDue = true;
      }
    },

    due() {
      let t = o.hb && !stopped ? heard + o.hb + (pingSent ? o.hbt : 0) : Infinity;
      for (const p of pending.values()) t = Math.min(t, p.t);
      return t;
    },

    request(id, body, timeout, now) {
      return new Promise((ok, no) => {
        let r = nextRequest;
        while (pending.has(r)) r = (r + 1) >>> 0;
        nextRequest = (r + 1) >>> 0;
        e.push({ kind: REQUEST, id, payload: encodeRequest(r, body) });
        pending.set(r, { t: now + timeout, ok, no });
      });
    },

    open(now, s, f, count) {
      if (count !== undefined) {
        if (count < base || count > written()) throw new TrufluxError(RESUME_FAILED, `peer counts ${count} frames, ${base}..${written()} fit`);
        forget(count);
        replay = outbox.slice();
        acked = rcvd;
        ackDue = false;
      }
      sec = s;
      files = f;
      ctl = [];
      heard = now;
      pingSent = pingDue = stopped = closeSent = false;
      ended = undefined;
    },

    close(code, reason) {
      record(code, reason, true, true);
      if (stopped) return;
      // Behind everything queued, whatever the queue's bound.
      q.push(coded(CLOSE, 0, code, reason));
    },

    fail(code, reason) {
      record(code, reason, true, code !== HEARTBEAT_TIMEOUT);
      emit('error', new TrufluxError(code, reason));
      stop();
    },

    lost(reason) {
      record(ABNORMAL, reason, false, false);
      stop();
    },

    finish(end) {
      for (const p of pending.values()) p.no(new TrufluxError(end.code, end.reason));
      pending.clear();
      q.length = outbox.length = replay.length = 0;
    },

    renew() {
      const lost = new TrufluxError(RESUME_FAILED, 'the session ended');
      for (const p of pending.values()) p.no(lost);
      pending.clear();
      rcvd = acked = base = octets = outbox.length = replay.length = 0;
      e.resumable = false;
    },

    end: () => ended,
  };
  return e;
}
