/**
 * The hello extensions of PROTOCOL.md §4.1, typed: the client's credentials and the server's
 * answer. Each type appears at most once and has the length its type fixes; unknown types are
 * ignored; anything else is a `PROTOCOL_ERROR` `FrameError`, another version
 * `VERSION_MISMATCH`.
 */

import { VERSION_MISMATCH, TrufluxError } from './code.js';
import { encodeHello, walkHello, type Extension } from './control.js';
import { frame, malformed, type Frame } from './frame.js';
import { HELLO } from './kind.js';
import { concat, getUint, uint, utf8 } from './octets.js';

/** The protocol version this client speaks. */
export const VERSION = 3;
export const AUTH = 1;
export const SESSION = 2;
export const RESUME = 3;
export const KEX = 4;
export const SECURE = 5;

/** What a client presents in its credentials. */
export interface Credentials {
  /** Bearer token. */
  token?: string | undefined;
  /** Asks for a resumable session. */
  session?: boolean | undefined;
  /** Resume: the session's token, the client's received count, the binder (keyed openings). */
  resume?: { token: Uint8Array; count: number; binder?: Uint8Array | undefined } | undefined;
  /** Requires both directions secure. */
  secure?: boolean | undefined;
  /** The first hello of a keyed opening: `KEX` and nothing else (the credentials given
   * beside it are not sent: they travel protected after the key exchange). */
  kex?: boolean | undefined;
}

/** What a server answers. */
export interface Answer {
  /** The resume token of a new resumable session. */
  session?: Uint8Array | undefined;
  /** The server's received count, answering a resume. */
  resume?: number | undefined;
  /** Both directions secure from now on. */
  secure: boolean;
}

/** The extensions that carry `c`. */
export function credentials(c: Credentials): Extension[] {
  const out: Extension[] = [];
  const add = (type: number, value: Uint8Array = new Uint8Array(0)) => out.push({ type, value });
  const r = c.resume;
  if (c.kex) add(KEX);
  else {
    if (c.token) add(AUTH, utf8.encode(c.token));
    if (c.session) add(SESSION);
    if (r) add(RESUME, concat([r.token, uint(r.count, 8), r.binder ?? new Uint8Array(0)]));
    if (c.secure) add(SECURE);
  }
  return out;
}

/** A hello frame of our version carrying `c`. */
export const helloFrame = (c: Credentials): Frame => frame(HELLO, encodeHello({ version: VERSION, extensions: credentials(c) }));

/** Parses a server's hello: version 3, each type once, the lengths its type fixes. */
export function parseAnswer(payload: Uint8Array): Answer {
  const seen: Record<number, Uint8Array> = {};
  let repeated = false;
  const version = walkHello(payload, (type, value) => ((repeated ||= !!seen[type]), (seen[type] = value)));
  if (version != VERSION) throw new TrufluxError(VERSION_MISMATCH);
  if (repeated) throw malformed();
  const get = (type: number, size: number) => {
    const v = seen[type];
    if (v && v.length != size) throw malformed();
    return v;
  };
  const count = get(RESUME, 8);
  return { session: get(SESSION, 32)?.slice(), resume: count && getUint(count, 0, 8), secure: !!get(SECURE, 0) };
}
