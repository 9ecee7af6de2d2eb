/**
 * Control payloads of PROTOCOL.md §4 and §11: `CLOSE` / `ERROR` / `REPLY_ERROR` (code and
 * reason), `HELLO` (magic, version, extensions), `ACK` (a count) and the request id that
 * opens a `REQUEST` payload. All plain binary, big-endian.
 */

import { frame, malformed, type Frame } from './frame.js';
import { concat, getUint, strict, uint, utf8 } from './octets.js';

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

/** The UTF-8 of `reason`, cut to `max` octets ({@link MAX_REASON_LEN} by default) at a
 * character boundary. */
export function reasonBytes(reason: string, max = MAX_REASON_LEN): Uint8Array {
  const b = utf8.encode(reason);
  let end = Math.min(b.length, max);
  // A continuation octet (10xxxxxx) just past the cut means a character straddles it.
  while ((b[end]! & 0xc0) == 0x80) end--;
  return b.subarray(0, end);
}

/** `reason` cut as {@link reasonBytes} cuts it, as a string (for WebSocket close frames). */
export const cutReason = (reason: string) => strict.decode(reasonBytes(reason));

/** A `CLOSE` / `ERROR` / `REPLY_ERROR` payload: code (u16), then the reason cut to 123 octets. */
export const encodeClose = (code: number, reason = '') => concat([uint(code, 2), reasonBytes(reason)]);

/** A frame of `kind` with a code and reason (`CLOSE`, `ERROR`, `REPLY_ERROR`, `FILE_*`). */
export const coded = (kind: number, id: number, code: number, reason?: string): Frame => frame(kind, encodeClose(code, reason), id);

/** Parses a `CLOSE` / `ERROR` / `REPLY_ERROR` payload. */
export function parseClose(payload: Uint8Array): Close {
  try {
    if (payload.length > 1 && payload.length < 3 + MAX_REASON_LEN) return { code: getUint(payload, 0, 2), reason: strict.decode(payload.subarray(2)) };
  } catch {}
  throw malformed();
}

/** A `HELLO` payload: "TFLX", version (u16), then each extension as type (u16), length
 * (u16) and value. At most 32 extensions of at most 65535 octets each. */
export function encodeHello({ version, extensions }: Hello): Uint8Array {
  if (extensions.length > MAX_HELLO_EXTENSIONS || extensions.some((e) => e.value.length > 0xffff)) throw malformed();
  return concat([utf8.encode(MAGIC), uint(version, 2), ...extensions.flatMap((e) => [uint(e.type, 2), uint(e.value.length, 2), e.value])]);
}

/** Walks a `HELLO` payload: checks its magic and each extension's bounds (at most 32), calls
 * `each` with each extension's type and value (sharing `payload`), and returns the version. */
export function walkHello(payload: Uint8Array, each: (type: number, value: Uint8Array) => void): number {
  if (payload.length < 6 || String.fromCharCode(...payload.subarray(0, 4)) != MAGIC) throw malformed();
  for (let at = 6, n = 0; at < payload.length; n++) {
    // A header cut short reads as a NaN length, which fails the comparison too.
    const end = at + 4 + getUint(payload, at + 2, 2);
    if (n == MAX_HELLO_EXTENSIONS || !(end <= payload.length)) throw malformed();
    each(getUint(payload, at, 2), payload.subarray(at + 4, (at = end)));
  }
  return getUint(payload, 4, 2);
}

/** Parses a `HELLO` payload; extension values share `payload`. */
export function parseHello(payload: Uint8Array): Hello {
  const extensions: Extension[] = [];
  const version = walkHello(payload, (type, value) => extensions.push({ type, value }));
  return { version, extensions };
}

/** An `ACK` payload: the count of application frames received (u64). */
export function encodeAck(count: number): Uint8Array {
  if (!(Number.isSafeInteger(count) && count >= 0)) throw RangeError();
  return uint(count, 8);
}

/** Parses an `ACK` payload. A count beyond 2^53 − 1 is more than any sender has written, so
 * it is refused here as the `PROTOCOL_ERROR` it is. */
export function parseAck(payload: Uint8Array): number {
  const count = getUint(payload, 0, 8);
  if (payload.length != 8 || !Number.isSafeInteger(count)) throw malformed();
  return count;
}

/** A `REQUEST` payload: the request id (u32), then the body. */
export function encodeRequest(requestId: number, body: Uint8Array): Uint8Array {
  if (requestId >>> 0 !== requestId) throw RangeError();
  return concat([uint(requestId, 4), body]);
}

/** Parses a `REQUEST` payload; the body shares `payload`. */
export function parseRequest(payload: Uint8Array): { requestId: number; body: Uint8Array } {
  if (payload.length < 4) throw malformed();
  return { requestId: getUint(payload, 0, 4), body: payload.subarray(4) };
}
