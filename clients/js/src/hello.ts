/**
 * The hello extensions of PROTOCOL.md §4.1, typed: the client's credentials and the server's
 * answer. Each type appears at most once and has the length its type fixes; unknown types are
 * ignored; anything else is a `PROTOCOL_ERROR` `FrameError`.
 */

import { VERSION_MISMATCH, TrufluxError } from './code.js';
import { encodeHello, parseHello, type Extension } from './control.js';
import { malformed, type Frame } from './frame.js';
import { HELLO } from './kind.js';
import { setUint, utf8 } from './octets.js';

/** The protocol version this client speaks. */
export const VERSION = 2;
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
  /** The first hello of a keyed opening: `KEX` and nothing else. */
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

const empty = new Uint8Array(0);

/** The extensions that carry `c`. */
export function credentials(c: Credentials): Extension[] {
  const out: Extension[] = [];
  const add = (type: number, value = empty) => out.push({ type, value });
  if (c.kex) add(KEX);
  if (c.token) add(AUTH, utf8.encode(c.token));
  if (c.session) add(SESSION);
  const r = c.resume;
  if (r) {
    const v = new Uint8Array(r.binder ? 72 : 40);
    v.set(r.token);
    setUint(v, 32, r.count, 8);
    if (r.binder) v.set(r.binder, 40);
    add(RESUME, v);
  }
  if (c.secure) add(SECURE);
  return out;
}

/** A hello frame of our version carrying `c`. */
export function helloFrame(c: Credentials): Frame {
  return { kind: HELLO, id: 0, payload: encodeHello({ version: VERSION, extensions: credentials(c) }) };
}

/** Parses a server's hello: version 2, each type once, the lengths its type fixes. */
export function parseAnswer(payload: Uint8Array): Answer {
  const hello = parseHello(payload);
  if (hello.version !== VERSION) throw new TrufluxError(VERSION_MISMATCH, `server speaks version ${hello.version}`);
  const seen = new Map<number, Uint8Array>();
  for (const { type, value } of hello.extensions) {
    if (seen.has(type)) throw malformed('repeated hello extension');
    seen.set(type, value);
  }
  const get = (type: number, size: number) => {
    const v = seen.get(type);
    if (v && v.length !== size) throw malformed('hello extension length');
    return v;
  };
  const count = get(RESUME, 8);
  return {
    session: get(SESSION, 32)?.slice(),
    resume: count && Number(new DataView(count.buffer, count.byteOffset).getBigUint64(0)),
    secure: !!get(SECURE, 0),
  };
}
