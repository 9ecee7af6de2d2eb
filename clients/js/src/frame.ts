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
import { concat, getUint, uint } from './octets.js';

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

/** A frame of `kind`: `payload` empty unless given, `id` 0 unless given. */
export const frame = (kind: number, payload: Uint8Array = new Uint8Array(0), id = 0): Frame => ({ kind, id, payload });

/** A malformed or oversized frame; `code` is `PROTOCOL_ERROR` or `MESSAGE_TOO_BIG`. */
export class FrameError extends TrufluxError {
  override name = 'FrameError';
}

/** A `PROTOCOL_ERROR` {@link FrameError}. */
export const malformed = (what?: string) => new FrameError(PROTOCOL_ERROR, what);

/** Whether `kind` (protected bit cleared) is a kind of PROTOCOL.md §3. */
export const isKind = (kind: number) => (kind > 0 && kind < 8) || (kind > 15 && kind < 20) || (kind > 31 && kind < 42);

/** Checks a payload length against the limit (16 octets more when protected). */
const limit = (length: number, maxPayload: number, sealed: unknown) => {
  if (length > maxPayload + (sealed ? SEAL_OVERHEAD : 0)) throw new FrameError(MESSAGE_TOO_BIG);
};

/** Parses and checks the 9 header octets at `at` of `b` (the caller has checked they are there). */
export function parseHeader(b: Uint8Array, at: number, maxPayload: number): Header {
  const octet = b[at]!;
  const h = { kind: octet & 127, id: getUint(b, at + 1, 4), length: getUint(b, at + 5, 4), size: octet & PROTECTED ? 21 : 9 };
  if (!isKind(h.kind) || h.id > MAX_ID) throw malformed();
  limit(h.length, maxPayload, octet & PROTECTED);
  return h;
}

/** The 9 header octets for a kind octet (protected bit included), an id and a length. */
export const header = (octet: number, id: number, length: number) => concat([uint(octet, 1), uint(id, 4), uint(length, 4)]);

/** A frame's wire form, unchecked: header, tag, payload. */
export const wire = ({ kind, id, payload, tag }: Frame) => concat([uint(tag ? kind | PROTECTED : kind, 1), uint(id, 4), uint(payload.length, 4), tag ?? payload.subarray(0, 0), payload]);

/** A frame's wire form: header, tag, payload. Checks kind, id, tag and payload length first,
 * so that a frame the receiver would refuse is not sent. */
export function encodeFrame(frame: Frame, maxPayload = DEFAULT_MAX_PAYLOAD): Uint8Array {
  const { kind, id, payload, tag } = frame;
  if (!isKind(kind) || !(id >= 0 && id <= MAX_ID && id % 1 == 0) || (tag && tag.length != TAG_LEN)) throw malformed();
  limit(payload.length, maxPayload, tag);
  return wire(frame);
}

/** Decodes one WebSocket message as exactly one frame: its length field must equal the
 * message's size minus the header (PROTOCOL.md §1). Payload and tag share `message`. */
export function decodeExact(message: Uint8Array, maxPayload = DEFAULT_MAX_PAYLOAD): Frame {
  // A message shorter than a header reads as a NaN id or length, which fits no message size.
  const h = parseHeader(message, 0, maxPayload);
  if (message.length != h.size + h.length) throw malformed();
  const frame: Frame = { kind: h.kind, id: h.id, payload: message.subarray(h.size) };
  if (h.size > HEADER_LEN) frame.tag = message.subarray(HEADER_LEN, h.size);
  return frame;
}
