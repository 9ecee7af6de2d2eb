/**
 * File transfers (PROTOCOL.md §10): offers, credit flow control, pause and resume both ways,
 * cancel, and SHA-256 end to end with the incremental hasher. Memory is bounded by the credit
 * window on both sides, whatever the file's size (a Blob destination holds what it collects).
 *
 * Transfers belong to the session: in a resumable one they wait through a lost connection and
 * go on after the resume (their frames are counted and sent again, §11.3); they end with it.
 */

import { FILE_CANCELLED, FILE_DECLINED, FILE_FLOW_VIOLATION, FILE_INTEGRITY, FILE_IO, TOO_MANY_TRANSFERS, error, UNKNOWN_TRANSFER } from '../code.js';
import type { Files as Connection, FilesPlugin, Link } from '../client.js';
import { coded, parseClose, reasonBytes } from '../control.js';
import { frame, type Frame } from '../frame.js';
import { FILE_ABORT, FILE_ACCEPT, FILE_CHUNK, FILE_CREDIT, FILE_DONE, FILE_END, FILE_OFFER, FILE_PAUSE, FILE_REFUSE, FILE_RESUME } from '../kind.js';
import { concat, getUint, hex, strict, uint } from '../octets.js';
import { Sha256 } from './sha256.js';

export interface FileOptions {
  /** Largest chunk sent, octets. Default 64 KiB. */
  chunk?: number;
  /** Credit granted per incoming transfer, octets. Default 256 KiB. */
  window?: number;
  /** Concurrent incoming transfers. Default 8. */
  maxIncoming?: number;
  /** Most octets an incoming transfer into a Blob may collect. Default 64 MiB. */
  blobLimit?: number;
}

/** Where accepted content goes: a `WritableStream`, or anything with `write` (awaited). */
export interface Sink {
  write(chunk: Uint8Array): unknown;
  close?(): unknown;
  abort?(reason?: unknown): unknown;
}

/** What can be sent: a Blob (a File), a ReadableStream, or any async iterable of octets. */
export type Source = Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

type Listener = (...args: any[]) => void;

/** A transfer either way. Events: `accepted`, `progress` (octets), `paused`, `resumed`,
 * `finished` (size, SHA-256 hex), `failed` (code, reason; `FILE_DECLINED` when declined,
 * `FILE_CANCELLED` when cancelled). */
export interface Transfer {
  readonly id: number;
  readonly name: string;
  /** Announced size; undefined for a stream of unknown length. */
  readonly size: number | undefined;
  readonly bytes: number;
  on(event: string, fn: Listener): Transfer;
  cancel(): void;
  /** Resolves with size and SHA-256 (hex) when finished, rejects when it fails. */
  readonly done: Promise<{ size: number; sha256: string }>;
}

/** An incoming transfer: decide with `accept` or `decline`; `pause` / `resume` once running. */
export interface Offer extends Transfer {
  /** Accepts into `sink`, or into a Blob (`blob()` gives it once finished). */
  accept(sink?: Sink | WritableStream<Uint8Array>): Offer;
  decline(reason?: string): void;
  pause(): void;
  resume(): void;
  blob(): Blob | undefined;
}

export interface Files extends FilesPlugin {
  /** Offers `source` to the server as `name`. */
  send(source: Source, options?: { name?: string; size?: number }): Transfer;
}

/** The parts every transfer has: events, the outcome, the hash of its content. */
function transfer(id: number, name: string, size: number | undefined, end: (code: number, reason?: string) => void) {
  const listeners: Record<string, Listener[]> = {};
  let settle!: [(v: { size: number; sha256: string }) => void, (e: unknown) => void];
  const t = {
    id,
    name,
    size,
    bytes: 0,
    over: false,
    sha: new Sha256(),
    done: new Promise<{ size: number; sha256: string }>((ok, no) => (settle = [ok, no])),
    on(event: string, fn: Listener) {
      (listeners[event] ??= []).push(fn);
      return t;
    },
    emit(event: string, ...args: any[]) {
      for (const fn of listeners[event] ?? []) fn(...args);
    },
    /** Ends the transfer: finished with a SHA-256, or failed with a code. */
    settle(code: number | Uint8Array, reason = '') {
      if (t.over) return;
      t.over = true;
      if (typeof code == 'number') t.emit('failed', code, reason), settle[1](error(code, reason, id));
      else t.emit('finished', t.bytes, hex(code)), settle[0]({ size: t.bytes, sha256: hex(code) });
    },
    cancel: () => end(FILE_CANCELLED),
  };
  t.done.catch(() => {});
  return t;
}

/** The frame's code and reason, or `FILE_CANCELLED` when they do not parse. */
const why = (f: Frame): [number, string] => {
  try {
    const c = parseClose(f.payload);
    return [c.code, c.reason];
  } catch {
    return [FILE_CANCELLED, ''];
  }
};

export function files(options: FileOptions = {}): Files {
  const window = options.window ?? 0x40000;
  let link: Link | undefined;
  let out = new Map<number, ReturnType<typeof outgoing>>();
  let inc = new Map<number, ReturnType<typeof incoming>>();
  let nextId = 0;
  /** Chunks and ends read ahead, one per transfer at most, for the client to pull. */
  let ready: Frame[] = [];

  const ctl = (f: Frame) => {
    link?.ctl(f);
    link?.flush();
  };

  function outgoing(source: Source, name: string, size: number | undefined) {
    const id = nextId;
    const s = 'stream' in source ? source.stream() : source;
    const reader: any = 'getReader' in s ? s.getReader() : s[Symbol.asyncIterator]();
    let credit = 0;
    let paused = false;
    let reading = false;
    let left: Uint8Array | undefined;
    let digest: Uint8Array | undefined;
    /** Ends the transfer; `tell`: the receiver hears it in a `FILE_ABORT`. */
    const end = (code: number, reason?: string, tell = true) => {
      if (t.over) return;
      if (tell) ctl(coded(FILE_ABORT, id, code, reason));
      out.delete(id);
      ready = ready.filter((f) => f.id != id);
      Promise.resolve('cancel' in reader ? reader.cancel() : reader.return?.()).catch(() => {});
      t.settle(code, reason);
    };
    const t = Object.assign(transfer(id, name, size, end), {
      /** Reads the next chunk within the credit, unless one waits or we may not. */
      async read() {
        if (reading || digest || paused || credit <= 0 || t.over || ready.some((f) => f.id == id)) return;
        reading = true;
        try {
          const c = left ?? (await reader.read()).value;
          if (!c) {
            if (size != null && t.bytes != size) return end(FILE_INTEGRITY);
            ready.push(frame(FILE_END, concat([uint(t.bytes, 8), (digest = t.sha.digest())]), id));
          } else {
            const n = Math.min(c.length, credit, options.chunk ?? 0x10000);
            left = n < c.length ? c.subarray(n) : undefined;
            if (size != null && t.bytes + n > size) return end(FILE_INTEGRITY);
            credit -= n;
            t.bytes += n;
            t.sha.update(c.subarray(0, n));
            ready.push(frame(FILE_CHUNK, c.slice(0, n), id));
            t.emit('progress', t.bytes);
          }
          link?.flush();
        } catch (e: any) {
          end(FILE_IO, e?.message);
        } finally {
          reading = false;
        }
      },
      frame(f: Frame) {
        const k = f.kind;
        if (k == FILE_ACCEPT || k == FILE_CREDIT) {
          if (f.payload.length != 4) return end(FILE_FLOW_VIOLATION);
          if (k == FILE_ACCEPT) t.emit('accepted');
          credit += getUint(f.payload, 0, 4);
        } else if (k == FILE_PAUSE || k == FILE_RESUME) t.emit((paused = k == FILE_PAUSE) ? 'paused' : 'resumed');
        else if (k == FILE_DONE) {
          out.delete(id);
          return digest && hex(f.payload) == hex(digest) ? t.settle(f.payload) : t.settle(FILE_INTEGRITY);
        } else return end(...why(f), false);
        t.read();
      },
    });
    // An async iterator reads through `read` as a reader does.
    if (!('read' in reader)) reader.read = reader.next;
    nextId = (nextId + 1) & 0x7fffffff;
    return t;
  }

  function incoming(id: number, name: string, size: number | undefined) {
    let sink: Sink | undefined;
    let parts: Uint8Array[] | undefined;
    let blob: Blob | undefined;
    let credit = 0;
    let paused = false;
    let withheld = 0;
    let writing: Promise<unknown> = Promise.resolve();
    /** Ends the transfer; `tell`: the sender hears it in a `FILE_REFUSE`. */
    const end = (code: number, reason?: string, tell = true) => {
      if (t.over) return;
      inc.delete(id);
      if (tell) ctl(coded(FILE_REFUSE, id, code, reason));
      new Promise((ok) => ok(sink?.abort?.(reason))).catch(() => {});
      t.settle(code, reason);
    };
    const grant = (n: number, kind = FILE_CREDIT) => {
      credit += n;
      ctl(frame(kind, uint(n, 4), id));
    };
    const t = Object.assign(transfer(id, name, size, end), {
      accept(s?: Sink | WritableStream<Uint8Array>) {
        if (!sink && !t.over) {
          // A Blob collects at most the blob limit.
          const limit = options.blobLimit ?? 0x4000000;
          sink = s ? ('getWriter' in s ? s.getWriter() : s) : { write: (c) => ((parts ??= []).push(c), t.bytes > limit && Promise.reject(Error('blob limit'))), close: () => (blob = new Blob(parts as BlobPart[])) };
          grant(window, FILE_ACCEPT);
        }
        return t;
      },
      decline(reason?: string) {
        if (!sink) end(FILE_DECLINED, reason);
      },
      pause() {
        if (!paused && sink && !t.over) ctl(frame(FILE_PAUSE, undefined, id)), t.emit((paused = true) && 'paused');
      },
      resume() {
        if (paused && !t.over) {
          paused = false;
          ctl(frame(FILE_RESUME, undefined, id));
          if (withheld) grant(withheld);
          withheld = 0;
          t.emit('resumed');
        }
      },
      blob: () => blob,
      frame(f: Frame) {
        const p = f.payload;
        const n = p.length;
        if (f.kind == FILE_ABORT) return end(...why(f), false);
        if (!sink || (f.kind == FILE_CHUNK && n > credit)) return end(FILE_FLOW_VIOLATION);
        if (f.kind == FILE_CHUNK) {
          if (size != null && t.bytes + n > size) return end(FILE_INTEGRITY);
          credit -= n;
          t.bytes += n;
          t.sha.update(p);
          // Writes run one after the other; credit returns as each completes.
          const bytes = p.slice();
          const at = t.bytes;
          writing = writing.then(async () => {
            if (t.over) return;
            await sink!.write(bytes);
            t.emit('progress', at);
            if (paused) withheld += n;
            else if (!t.over) grant(n);
          });
        } else {
          // FILE_END: size and SHA-256 against what arrived.
          const digest = t.sha.digest();
          if (n != 40 || getUint(p, 0, 8) != t.bytes || (size != null && size != t.bytes) || hex(p.subarray(8)) != hex(digest)) return end(FILE_INTEGRITY);
          writing = writing.then(async () => {
            if (t.over) return;
            await sink!.close?.();
            inc.delete(id);
            ctl(frame(FILE_DONE, digest, id));
            t.settle(digest);
          });
        }
        writing.catch((e) => end(FILE_IO, e?.message));
      },
    });
    return t;
  }

  return {
    connect(l): Connection {
      link = l;
      return {
        frame(f) {
          const { kind: k, id, payload: p } = f;
          let name: string | undefined;
          if (k == FILE_OFFER) {
            try {
              name = strict.decode(p.subarray(8));
            } catch {}
            if (inc.has(id)) return l.emit('error', error(FILE_FLOW_VIOLATION, '', id));
            if (p.length < 8 || p.length > 1032 || name == null) return ctl(coded(FILE_REFUSE, id, FILE_FLOW_VIOLATION));
            if (inc.size >= (options.maxIncoming ?? 8)) return ctl(coded(FILE_REFUSE, id, TOO_MANY_TRANSFERS));
            const size = getUint(p, 0, 8);
            const offer = incoming(id, name, size < 2 ** 64 - 1 ? size : undefined);
            inc.set(id, offer);
            return l.emit('file', offer);
          }
          const t = k < FILE_ACCEPT ? inc.get(id) : out.get(id);
          if (t) return t.frame(f);
          l.emit('error', error(UNKNOWN_TRANSFER, '', id));
        },
        pull() {
          const f = ready.shift();
          if (f) queueMicrotask(() => out.get(f.id)?.read());
          return f;
        },
        end(code, reason) {
          const all = [...out.values(), ...inc.values()];
          out = new Map();
          inc = new Map();
          ready = [];
          for (const t of all) t.settle(code, reason);
        },
      };
    },
    send(source, o = {}) {
      const size = o.size ?? (source as Blob).size;
      const name = reasonBytes(o.name ?? ((source as File).name || 'file'), 1024);
      if (!link) throw error(FILE_IO);
      const t = outgoing(source, strict.decode(name), size);
      link.push(frame(FILE_OFFER, concat([size == null ? new Uint8Array(8).fill(255) : uint(size, 8), name]), t.id));
      out.set(t.id, t);
      link.flush();
      return t;
    },
  };
}
