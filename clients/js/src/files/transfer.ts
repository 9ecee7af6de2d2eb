/**
 * File transfers (PROTOCOL.md §10): offers, credit flow control, pause and resume both ways,
 * cancel, and SHA-256 end to end with the incremental hasher. Memory is bounded by the credit
 * window on both sides, whatever the file's size (a Blob destination holds what it collects).
 *
 * Transfers belong to the connection that carries them: a disconnect ends them all.
 */

import { FILE_CANCELLED, FILE_DECLINED, FILE_FLOW_VIOLATION, FILE_INTEGRITY, FILE_IO, TOO_MANY_TRANSFERS, TrufluxError, UNKNOWN_TRANSFER } from '../code.js';
import type { FilesPlugin, Link } from '../client.js';
import { parseClose } from '../control.js';
import { coded } from '../engine.js';
import type { Frame } from '../frame.js';
import { FILE_ABORT, FILE_ACCEPT, FILE_CHUNK, FILE_CREDIT, FILE_DONE, FILE_END, FILE_OFFER, FILE_PAUSE, FILE_REFUSE, FILE_RESUME } from '../kind.js';
import { getUint, setUint, strict, utf8 } from '../octets.js';
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

const UNKNOWN = 2 ** 64 - 1;
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  setUint(b, 0, n, 4);
  return b;
};

function handle(id: number, name: string, size: number | undefined) {
  const listeners: Record<string, Listener[]> = {};
  let settle!: [(v: { size: number; sha256: string }) => void, (e: unknown) => void];
  const done = new Promise<{ size: number; sha256: string }>((ok, no) => (settle = [ok, no]));
  done.catch(() => {});
  let over = false;
  const h = {
    id,
    name,
    size,
    bytes: 0,
    done,
    on(event: string, fn: Listener) {
      (listeners[event] ??= []).push(fn);
      return h;
    },
    emit(event: string, ...args: any[]) {
      for (const fn of listeners[event] ?? []) fn(...args);
    },
    finish(sha: Uint8Array) {
      if (over) return;
      over = true;
      h.emit('finished', h.bytes, hex(sha));
      settle[0]({ size: h.bytes, sha256: hex(sha) });
    },
    fail(code: number, reason: string) {
      if (over) return;
      over = true;
      h.emit('failed', code, reason);
      settle[1](new TrufluxError(code, reason));
    },
    get over() {
      return over;
    },
    cancel() {},
  };
  return h;
}

/** An async iterator of octets from any source. */
function chunks(source: Source): AsyncIterator<Uint8Array> {
  const s = 'stream' in source ? source.stream() : source;
  if ('getReader' in s) {
    const reader = s.getReader();
    return { next: () => reader.read() as Promise<IteratorResult<Uint8Array>>, return: async () => (reader.cancel(), { done: true, value: undefined }) };
  }
  return s[Symbol.asyncIterator]();
}

/** A sink collecting a Blob of at most `limit` octets. */
function blobSink(limit: number) {
  const parts: Uint8Array[] = [];
  let n = 0;
  let blob: Blob | undefined;
  return {
    write(c: Uint8Array) {
      if ((n += c.length) > limit) throw new TrufluxError(FILE_IO, 'over the Blob limit');
      parts.push(c.slice());
    },
    close() {
      blob = new Blob(parts as BlobPart[]);
    },
    get blob() {
      return blob;
    },
  };
}

export function files(options: FileOptions = {}): Files {
  const chunk = options.chunk ?? 0x10000;
  const window = options.window ?? 0x40000;
  let link: Link | undefined;
  let out = new Map<number, ReturnType<typeof outgoing>>();
  let inc = new Map<number, ReturnType<typeof incoming>>();
  let nextId = 0;
  /** Chunks and ends read ahead, one per transfer at most, for the engine to pull. */
  let ready: Frame[] = [];

  const ctl = (f: Frame) => {
    link?.engine.ctl(f);
    link?.flush();
  };

  function outgoing(source: Source, name: string, size: number | undefined) {
    const id = nextId;
    nextId = (nextId + 1) & 0x7fffffff;
    const h = handle(id, name, size);
    const it = chunks(source);
    const sha = new Sha256();
    let credit = 0;
    let paused = false;
    let reading = false;
    let left: Uint8Array | undefined;
    let ended = false;
    let digest: Uint8Array | undefined;
    const end = (code: number, reason: string, tell?: boolean) => {
      if (tell) ctl(coded(FILE_ABORT, id, code, reason));
      out.delete(id);
      ready = ready.filter((f) => f.id !== id);
      it.return?.();
      h.fail(code, reason);
    };
    /** Reads the next chunk within the credit, unless one waits or we may not. */
    const read = async () => {
      if (reading || ended || paused || credit <= 0 || ready.some((f) => f.id === id) || h.over) return;
      reading = true;
      try {
        let c = left;
        left = undefined;
        if (!c) {
          const r = await it.next();
          if (r.done) {
            ended = true;
            if (size !== undefined && h.bytes !== size) return end(FILE_INTEGRITY, 'the source is shorter than announced', true);
            const p = new Uint8Array(40);
            setUint(p, 0, h.bytes, 8);
            p.set((digest = sha.digest()), 8);
            ready.push({ kind: FILE_END, id, payload: p });
            return link?.flush();
          }
          c = r.value;
        }
        const n = Math.min(c.length, credit, chunk);
        if (n < c.length) left = c.subarray(n);
        const piece = c.subarray(0, n);
        if (size !== undefined && h.bytes + n > size) return end(FILE_INTEGRITY, 'the source is longer than announced', true);
        credit -= n;
        h.bytes += n;
        sha.update(piece);
        ready.push({ kind: FILE_CHUNK, id, payload: piece.slice() });
        h.emit('progress', h.bytes);
        link?.flush();
      } catch (error: any) {
        end(FILE_IO, `reading the source: ${error?.message ?? error}`, true);
      } finally {
        reading = false;
      }
    };
    const t = Object.assign(h, {
      read,
      cancel: () => !h.over && end(FILE_CANCELLED, 'cancelled by the sender', true),
      frame(f: Frame) {
        const k = f.kind;
        if (k === FILE_ACCEPT || k === FILE_CREDIT) {
          if (f.payload.length !== 4) return end(FILE_FLOW_VIOLATION, 'malformed credit', true);
          if (k === FILE_ACCEPT) h.emit('accepted');
          credit += getUint(f.payload, 0, 4);
        } else if (k === FILE_PAUSE || k === FILE_RESUME) {
          paused = k === FILE_PAUSE;
          h.emit(paused ? 'paused' : 'resumed');
        } else if (k === FILE_DONE) {
          out.delete(id);
          if (digest && hex(f.payload) === hex(digest)) h.finish(f.payload);
          else h.fail(FILE_INTEGRITY, 'the receiver confirmed another hash');
          return;
        } else {
          let r = { code: FILE_CANCELLED, reason: 'ended by the receiver' };
          try {
            r = parseClose(f.payload);
          } catch {}
          return end(r.code, r.reason);
        }
        read();
      },
    });
    return t;
  }

  function incoming(id: number, name: string, size: number | undefined) {
    const h = handle(id, name, size);
    const sha = new Sha256();
    let sink: Sink | undefined;
    let blob: ReturnType<typeof blobSink> | undefined;
    let credit = 0;
    let paused = false;
    let withheld = 0;
    let writing = Promise.resolve();
    let accepted = false;
    const grant = (n: number) => {
      credit += n;
      ctl({ kind: FILE_CREDIT, id, payload: u32(n) });
    };
    const end = (code: number, reason: string, tell: boolean) => {
      inc.delete(id);
      if (tell) ctl(coded(FILE_REFUSE, id, code, reason));
      Promise.resolve(sink?.abort?.(reason)).catch(() => {});
      h.fail(code, reason);
    };
    const offer = Object.assign(h, {
      accept(s?: Sink | WritableStream<Uint8Array>) {
        if (accepted || h.over) return offer;
        accepted = true;
        sink = s ? ('getWriter' in s ? s.getWriter() : s) : (blob = blobSink(options.blobLimit ?? 0x4000000));
        credit = window;
        ctl({ kind: FILE_ACCEPT, id, payload: u32(window) });
        return offer;
      },
      decline(reason = 'declined') {
        if (!accepted && !h.over) end(FILE_DECLINED, reason, true);
      },
      pause() {
        if (!paused && accepted && !h.over) {
          paused = true;
          ctl({ kind: FILE_PAUSE, id, payload: new Uint8Array(0) });
          h.emit('paused');
        }
      },
      resume() {
        if (paused && !h.over) {
          paused = false;
          ctl({ kind: FILE_RESUME, id, payload: new Uint8Array(0) });
          if (withheld) grant(withheld);
          withheld = 0;
          h.emit('resumed');
        }
      },
      cancel: () => !h.over && end(FILE_CANCELLED, 'cancelled by the receiver', true),
      blob: () => blob?.blob,
      frame(f: Frame) {
        const k = f.kind;
        if (k === FILE_ABORT) {
          let r = { code: FILE_CANCELLED, reason: 'ended by the sender' };
          try {
            r = parseClose(f.payload);
          } catch {}
          return end(r.code, r.reason, false);
        }
        if (!accepted) return end(FILE_FLOW_VIOLATION, 'content before acceptance', true);
        if (k === FILE_CHUNK) {
          const n = f.payload.length;
          if (n > credit) return end(FILE_FLOW_VIOLATION, 'more than the credit', true);
          if (size !== undefined && h.bytes + n > size) return end(FILE_INTEGRITY, 'more content than announced', true);
          credit -= n;
          h.bytes += n;
          sha.update(f.payload);
          // Writes run one after the other; credit returns as each completes.
          const bytes = f.payload.slice();
          writing = writing.then(async () => {
            if (h.over) return;
            await sink!.write(bytes);
            h.emit('progress', h.bytes);
            if (paused) withheld += n;
            else if (!h.over) grant(n);
          });
          writing.catch((e) => end(FILE_IO, `writing: ${e?.message ?? e}`, true));
          return;
        }
        // FILE_END: size and SHA-256 against what arrived.
        const digest = hex(sha.digest());
        if (f.payload.length !== 40 || getUint(f.payload, 0, 8) !== h.bytes || (size !== undefined && size !== h.bytes) || hex(f.payload.subarray(8)) !== digest) {
          return end(FILE_INTEGRITY, 'size or SHA-256 does not match', true);
        }
        writing.then(async () => {
          if (h.over) return;
          await sink!.close?.();
          inc.delete(id);
          const d = f.payload.slice(8);
          ctl({ kind: FILE_DONE, id, payload: d });
          h.finish(d);
        }).catch((e) => end(FILE_IO, `storing: ${e?.message ?? e}`, true));
      },
    });
    return offer;
  }

  const plugin: Files = {
    connect(l) {
      link = l;
      return {
        frame(f) {
          const k = f.kind;
          if (k === FILE_OFFER) {
            if (inc.has(f.id)) return l.emit('error', new TrufluxError(FILE_FLOW_VIOLATION, `transfer ${f.id} offered twice`));
            const n = f.payload.length >= 8 && f.payload.length <= 1032 ? getUint(f.payload, 0, 8) : -1;
            let name: string | undefined;
            try {
              name = strict.decode(f.payload.subarray(8));
            } catch {}
            if (n < 0 || name === undefined) return ctl(coded(FILE_REFUSE, f.id, FILE_FLOW_VIOLATION, 'malformed offer'));
            if (inc.size >= (options.maxIncoming ?? 8)) return ctl(coded(FILE_REFUSE, f.id, TOO_MANY_TRANSFERS, 'too many transfers'));
            const offer = incoming(f.id, name, n >= UNKNOWN ? undefined : n);
            inc.set(f.id, offer);
            l.emit('file', offer);
            return;
          }
          const t = k < FILE_ACCEPT ? inc.get(f.id) : out.get(f.id);
          if (t) return t.frame(f);
          l.emit('error', new TrufluxError(UNKNOWN_TRANSFER, `file frame for unknown transfer ${f.id}`));
        },
        pull() {
          const f = ready.shift();
          if (f) queueMicrotask(() => out.get(f.id)?.read());
          return f;
        },
      };
    },
    end(code, reason) {
      const all = [...out.values(), ...inc.values()];
      out = new Map();
      inc = new Map();
      ready = [];
      for (const t of all) t.fail(code, `connection ended: ${reason}`);
    },
    send(source, o = {}) {
      const size = o.size ?? ('size' in source ? (source as Blob).size : undefined);
      const name = o.name ?? ((source as File).name || 'file');
      const t = outgoing(source, name, size);
      out.set(t.id, t);
      const p = new Uint8Array(8 + Math.min(utf8.encode(name).length, 1024));
      if (size === undefined) p.fill(255, 0, 8);
      else setUint(p, 0, size, 8);
      p.set(utf8.encode(name).subarray(0, 1024), 8);
      if (!link) throw new TrufluxError(FILE_IO, 'not connected');
      link.engine.push({ kind: FILE_OFFER, id: t.id, payload: p });
      link.flush();
      return t;
    },
  };
  return plugin;
}
