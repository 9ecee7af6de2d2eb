/**
 * The frame layout of PROTOCOL.md §2–§3: a 9-octet big-endian header (kind, id, length), the
 * 12-octet tag when the protected bit is set, then the payload.
 *
 * Decoding checks the kind, the reserved id bit and the length limit from the header alone,
 * before anything is buffered for the payload. Every transport hands over whole frames, to
 * decode with `decodeExact`: a WebSocket message is one, and the stream transports (TCP, TLS)
 * cut their stream into frames with the splitter of `stream.ts`.
 */

import { MESSAGE_TOO_BIG, PROTOCOL_ERROR, TrufluxError } from './code.js';
import { getUint, setUint } from './octets.js';

export { Kind } from './kind.js';

/** Octets of the plain header: kind, id, length. */
export const HEADER_LEN = 9;
/** Octets of the authentication tag of a protected frame. */
export const TAG_LEN = 12;
/** The bit of the kind octet that marks a protected frame. */
export const PROTECTED = 0x80;
/** The largest id: ids are 31-bit. */
export const MAX_ID = 0x7fffffff;
/** The default bound on one frame's payload: 16 MiB. */
export const DEFAULT_MAX_PAYLOAD = 0x1000000;
/** Octets a protected frame's payload may exceed the maximum by (CBC padding). */
export const SEAL_OVERHEAD = 16;

/** One frame. `tag` is present exactly when the frame is protected. */
export interface Frame {
  kind: number;
  id: number;
  payload: Uint8Array;
  tag?: Uint8Array | undefined;
}

/** The checked header fields of a frame. */
export interface Header {
  kind: number;
  id: number;
  /** The payload length. */
  length: number;
  /** The header's own length: 9, or 21 for a protected frame. */
  size: number;
}

/** A malformed or oversized frame; `code` is `PROTOCOL_ERROR` or `MESSAGE_TOO_BIG`. */
export class FrameError extends TrufluxError {
  override name = 'FrameError';
}

/** A `PROTOCOL_ERROR` {@link FrameError}. */
export const malformed = (what: string) => new FrameError(PROTOCOL_ERROR, what);

/** Whether `kind` (protected bit cleared) is a kind of PROTOCOL.md §3. */
export function isKind(kind: number): boolean {
  return (kind > 0 && kind < 8) || (kind > 0xf && kind < 0x14) || (kind > 0x1f && kind < 0x2a);
}

/** Checks a payload length against the limit (16 octets more when protected). */
function limit(length: number, maxPayload: number, sealed: unknown): void {
  if (length > maxPayload + (sealed ? SEAL_OVERHEAD : 0)) {
    throw new FrameError(MESSAGE_TOO_BIG, `payload ${length} over the limit ${maxPayload}`);
  }
}

/** Parses and checks the 9 header octets at `at` of `b` (the caller has checked they are there). */
export function parseHeader(b: Uint8Array, at: number, maxPayload: number): Header {
  const kind = b[at]! & ~PROTECTED;
  const sealed = b[at]! & PROTECTED;
  const id = getUint(b, at + 1, 4);
  const length = getUint(b, at + 5, 4);
  if (!isKind(kind)) throw malformed(`unknown kind ${b[at]}`);
  if (id > MAX_ID) throw malformed('id bit 31 set');
  limit(length, maxPayload, sealed);
  return { kind, id, length, size: sealed ? HEADER_LEN + TAG_LEN : HEADER_LEN };
}

/** The 9 header octets for a kind octet (protected bit included), an id and a length. */
export function header(octet: number, id: number, length: number): Uint8Array {
  const out = new Uint8Array(HEADER_LEN);
  out[0] = octet;
  setUint(out, 1, id, 4);
  setUint(out, 5, length, 4);
  return out;
}

/** A frame's wire form: header, tag, payload. Checks kind, id, tag and payload length first,
 * so that a frame the receiver would refuse is not sent. */
export function encodeFrame(frame: Frame, maxPayload: number = DEFAULT_MAX_PAYLOAD): Uint8Array {
  const { kind, id, payload, tag } = frame;
  if (!isKind(kind)) throw malformed(`unknown kind ${kind}`);
  if (!(id >= 0 && id <= MAX_ID && id % 1 === 0)) throw malformed(`id ${id}`);
  if (tag && tag.length !== TAG_LEN) throw malformed('tag length');
  limit(payload.length, maxPayload, tag);
  const size = tag ? HEADER_LEN + TAG_LEN : HEADER_LEN;
  const out = new Uint8Array(size + payload.length);
  out.set(header(tag ? kind | PROTECTED : kind, id, payload.length));
  if (tag) out.set(tag, HEADER_LEN);
  out.set(payload, size);
  return out;
}

/** The frame at `at` of `b`, whose header `h` has been checked; payload and tag share `b`. */
function slice(b: Uint8Array, at: number, h: Header): Frame {
  const frame: Frame = { kind: h.kind, id: h.id, payload: b.subarray(at + h.size, at + h.size + h.length) };
  if (h.size > HEADER_LEN) frame.tag = b.subarray(at + HEADER_LEN, at + h.size);
  return frame;
}

/** Decodes one WebSocket message as exactly one frame: its length field must equal the
 * message's size minus the header (PROTOCOL.md §1). Payload and tag share `message`. */
export function decodeExact(message: Uint8Array, maxPayload: number = DEFAULT_MAX_PAYLOAD): Frame {
  if (message.length < HEADER_LEN) throw malformed('short message');
  const h = parseHeader(message, 0, maxPayload);
  if (message.length !== h.size + h.length) throw malformed('length field differs from the message');
  return slice(message, 0, h);
}
