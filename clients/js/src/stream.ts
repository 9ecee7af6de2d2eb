/**
 * Framing of a byte stream (TCP, TLS: PROTOCOL.md §1): frames follow each other with nothing in
 * between, split across chunks however the network delivers them. The stream transports
 * (`truflux/node`) cut their stream into frames with this, so that every transport hands its
 * engine whole frames, and pages, which speak WebSocket, do not ship it.
 */

import { DEFAULT_MAX_PAYLOAD, HEADER_LEN, malformed, parseHeader, type Header } from './frame.js';

/** Cuts a byte stream into frames (see {@link frameSplitter}). */
export interface FrameSplitter {
  /** Adds a chunk of the stream. The splitter keeps views of it: do not reuse its memory. */
  push(chunk: Uint8Array): void;
  /** The octets of the next whole frame (header, tag, payload: give them to `decodeExact`),
   * or `undefined` until more arrive. Throws a `FrameError` at a bad header, checked before
   * anything of its payload is buffered, and the same error on every later call. */
  next(): Uint8Array | undefined;
  /** At end of stream: throws a `PROTOCOL_ERROR` `FrameError` if a frame was cut short. */
  finish(): void;
  /** Octets reserved for the frame being gathered. */
  readonly reserved: number;
  /** Octets received and not yet returned in frames. */
  readonly buffered: number;
}

/** Octets the splitter may always reserve beyond what has arrived of a frame. */
const STEP = 0x10000;

/**
 * A splitter for a byte stream: feed chunks with `push`, take frames with `next` until it
 * returns `undefined`, call `finish` at end of stream.
 *
 * A frame whole inside one chunk comes out as a view of that chunk, without a copy. A frame
 * split across chunks is gathered in a buffer that grows with the octets that arrive, never
 * reserving more than max(64 KiB, octets arrived) beyond them: a header announcing 16 MiB
 * reserves nothing until the payload comes.
 */
export function frameSplitter(maxPayload: number = DEFAULT_MAX_PAYLOAD): FrameSplitter {
  /** Chunks not yet consumed; the first from `pos` on. */
  const chunks: Uint8Array[] = [];
  let pos = 0;
  /** The frame being gathered: `buf[0 .. len]` has arrived; `head` once its header has. */
  let buf = new Uint8Array(0);
  let len = 0;
  let head: Header | undefined;
  let failed: unknown;

  const consume = (n: number) => {
    if ((pos += n) === chunks[0]!.length) {
      chunks.shift();
      pos = 0;
    }
  };

  const step = (): Uint8Array | undefined => {
    for (;;) {
      const chunk = chunks[0];
      const want = head ? head.size + head.length : HEADER_LEN;
      if (!len && chunk && chunk.length - pos >= HEADER_LEN) {
        const h = parseHeader(chunk, pos, maxPayload);
        const end = pos + h.size + h.length;
        if (chunk.length >= end) {
          const frame = chunk.subarray(pos, end);
          consume(end - pos);
          return frame;
        }
      }
      if (head && len === want) {
        // The buffer, exactly one frame long, now belongs to the frame.
        const frame = buf;
        buf = new Uint8Array(0);
        len = 0;
        head = undefined;
        return frame;
      }
      if (!chunk) return undefined;
      const n = Math.min(want - len, chunk.length - pos);
      if (len + n > buf.length) {
        // Doubling within the bound: at most max(64 KiB, len + n) beyond len + n, never past the frame.
        const grown = new Uint8Array(Math.min(want, Math.max(len + n, 2 * buf.length, STEP)));
        grown.set(buf.subarray(0, len));
        buf = grown;
      }
      buf.set(chunk.subarray(pos, pos + n), len);
      len += n;
      consume(n);
      if (!head && len === HEADER_LEN) head = parseHeader(buf, 0, maxPayload);
    }
  };

  const splitter: FrameSplitter = {
    push(chunk) {
      if (chunk.length) chunks.push(chunk);
    },
    next() {
      if (failed) throw failed;
      try {
        return step();
      } catch (e) {
        throw (failed = e);
      }
    },
    finish() {
      if (failed) throw failed;
      if (splitter.buffered) throw (failed = malformed('stream ended inside a frame'));
    },
    get reserved() {
      return buf.length;
    },
    get buffered() {
      return chunks.reduce((n, c) => n + c.length, len - pos);
    },
  };
  return splitter;
}
