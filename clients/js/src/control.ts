/**
 * Control payloads of PROTOCOL.md §4 and §11: `CLOSE` / `ERROR` / `REPLY_ERROR` (code and
 * reason), `HELLO` (magic, version, extensions), `ACK` (a count) and the request id that
 * opens a `REQUEST` payload. All plain binary, big-endian.
 */

import { malformed } from './frame.js';
import { getUint, setUint, strict, utf8 } from './octets.js';

/** The longest close or error reason, in octets of UTF-8 (fits a WebSocket close frame). */
export const MAX_REASON_LEN = 123;
/** The most extensions a hello may carry. */
export const MAX_HELLO_EXTENSIONS = 32;
/** The magic every hello payload starts with. */
export const MAGIC = 'TFLX';

/** A code and a reason: the payload of `CLOSE`, `ERROR` and `REPLY_ERROR`. */
export interface Close {
  code: number;
  reason: string;
}

/** One hello extension. */
export interface Extension {
  type: number;
  value: Uint8Array;
}

/** A hello payload's fields. */
export interface Hello {
  version: number;
  extensions: Extension[];
}

/** The UTF-8 of `reason`, cut to {@link MAX_REASON_LEN} octets at a character boundary. */
export function reasonBytes(reason: string): Uint8Array {
  const b = utf8.encode(reason);
  let end = Math.min(b.length, MAX_REASON_LEN);
  // A continuation octet (10xxxxxx) just past the cut means a character straddles it.
  while ((b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** `reason` cut as {@link reasonBytes} cuts it, as a string (for WebSocket close frames). */
export function cutReason(reason: string): string {
  return strict.decode(reasonBytes(reason));
}

/** A `CLOSE` / `ERROR` / `REPLY_ERROR` payload: code (u16), then the reason cut to 123 octets. */
export function encodeClose(code: number, reason = ''): Uint8Array {
  const text = reasonBytes(reason);
  const out = new Uint8Array(2 + text.length);
  setUint(out, 0, code, 2);
  out.set(text, 2);
  return out;
}

/** Parses a `CLOSE` / `ERROR` / `REPLY_ERROR` payload. */
export function parseClose(payload: Uint8Array): Close {
  if (payload.length < 2 || payload.length > 2 + MAX_REASON_LEN) throw malformed('close length');
  try {
    return { code: getUint(payload, 0, 2), reason: strict.decode(payload.subarray(2)) };
  } catch {
    throw malformed('close reason not UTF-8');
  }
}

/** A `HELLO` payload: "TFLX", version (u16), then each extension as type (u16), length
 * (u16) and value. At most 32 extensions of at most 65535 octets each. */
export function encodeHello(hello: Hello): Uint8Array {
  const { version, extensions } = hello;
  if (extensions.length > MAX_HELLO_EXTENSIONS) throw malformed('hello extensions');
  const out = new Uint8Array(extensions.reduce((n, e) => n + 4 + e.value.length, 6));
  utf8.encodeInto(MAGIC, out);
  setUint(out, 4, version, 2);
  let at = 6;
  for (const { type, value } of extensions) {
    if (value.length > 0xffff) throw malformed('hello extension length');
    setUint(out, at, type, 2);
    setUint(out, at + 2, value.length, 2);
    out.set(value, at + 4);
    at += 4 + value.length;
  }
  return out;
}

/** Parses a `HELLO` payload; extension values share `payload`. */
export function parseHello(payload: Uint8Array): Hello {
  if (payload.length < 6 || String.fromCharCode(...payload.subarray(0, 4)) !== MAGIC) throw malformed('hello magic');
  const extensions: Extension[] = [];
  for (let at = 6; at < payload.length; ) {
    if (extensions.length === MAX_HELLO_EXTENSIONS) throw malformed('hello extensions');
    const n = at + 4 > payload.length ? -1 : getUint(payload, at + 2, 2);
    if (n < 0 || at + 4 + n > payload.length) throw malformed('hello extension length');
    extensions.push({ type: getUint(payload, at, 2), value: payload.subarray(at + 4, at + 4 + n) });
    at += 4 + n;
  }
  return { version: getUint(payload, 4, 2), extensions };
}

/** An `ACK` payload: the count of application frames received (u64). */
export function encodeAck(count: number): Uint8Array {
  if (!(Number.isSafeInteger(count) && count >= 0)) throw new RangeError('ack count');
  const out = new Uint8Array(8);
  setUint(out, 0, count, 8);
  return out;
}

/** Parses an `ACK` payload. A count beyond 2^53 − 1 is more than any sender has written, so
 * it is refused here as the `PROTOCOL_ERROR` it is. */
export function parseAck(payload: Uint8Array): number {
  const count = payload.length === 8 ? getUint(payload, 0, 8) : -1;
  if (!Number.isSafeInteger(count) || count < 0) throw malformed('ack');
  return count;
}

/** A `REQUEST` payload: the request id (u32), then the body. */
export function encodeRequest(requestId: number, body: Uint8Array): Uint8Array {
  if (requestId >>> 0 !== requestId) throw new RangeError('request id');
  const out = new Uint8Array(4 + body.length);
  setUint(out, 0, requestId, 4);
  out.set(body, 4);
  return out;
}

/** Parses a `REQUEST` payload; the body shares `payload`. */
export function parseRequest(payload: Uint8Array): { requestId: number; body: Uint8Array } {
  if (payload.length < 4) throw malformed('request');
  return { requestId: getUint(payload, 0, 4), body: payload.subarray(4) };
}
