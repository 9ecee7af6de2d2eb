/**
 * In-band security for the client (PROTOCOL.md §4.1, §9, §11.3): the keyed opening, the key
 * exchange (ECDH P-256 + AES-128-GCM, the one suite WebCrypto can do), server key pinning, the
 * receiving table of §9.3, toggles, requests, rotation, and the resume binder.
 *
 * The rules are synchronous and live in each connection's `SecurityConnection`, which the
 * engine consults for every frame; the WebCrypto work (key exchange steps, sealing, opening)
 * is asynchronous and done where the driver awaits it, in record order.
 */

import { BAD_RECORD, HANDSHAKE_FAILED, INTERNAL_ERROR, NO_COMMON_SUITE, PROTOCOL_ERROR, SECURITY_REQUIRED, TrufluxError, UNEXPECTED_PLAINTEXT, UNTRUSTED_SERVER } from '../code.js';
import type { Link, OpeningIo, SecurityPlugin } from '../client.js';
import { parseClose } from '../control.js';
import { coded, type Out } from '../engine.js';
import type { Frame } from '../frame.js';
import { helloFrame, parseAnswer, type Credentials } from '../hello.js';
import { CLOSE, HELLO, SECURITY } from '../kind.js';
import { concat, ecdhShared, generateEcdh, hkdfExpand, hkdfExtract, hmac, LABEL_PREFIX, sha256, randomBytes, verifyEcdsa, verifyHmac, type EcdhKeyPair } from './crypto.js';
import { Opener, Sealer } from './record.js';
import { utf8 } from '../octets.js';

export const KEX_INIT = 1;
export const KEX_REPLY = 2;
export const KEX_FAIL = 3;
export const FINISHED = 4;
export const START = 5;
export const SEC_ON = 8;
export const SEC_OFF = 9;
export const REQUEST = 10;
export const REKEY = 11;
/** Suite id of `ecdh-p256-aes128gcm`. */
export const ECDH_P256_AES128GCM = 2;

export interface SecurityOptions {
  /** Fingerprints (64 hex digits, SHA-256 of the server's 65-octet key) the client trusts;
   * empty: the exchange is anonymous. */
  pins?: string[];
  /** Trust on first use: the first key seen is pinned for the client's later connections. */
  tofu?: boolean;
  /** Both directions secure from the opening on (`SECURE`), and never turned off. */
  required?: boolean;
  /** `auto` (default): a keyed opening when the connection carries a token, asks for a
   * resumable session, requires security or pins a key; `keyed`: always; `plain`: only where
   * required (or to resume a keyed session). */
  opening?: 'auto' | 'keyed' | 'plain';
  /** After `KEX_FAIL` (no common suite), go on in plain instead of closing. Default false. */
  fallbackPlain?: boolean;
  /** Rotation: records, payload octets, ms under one key. Default 2^24, 1 GiB, 1 hour. */
  rekey?: { records?: number; octets?: number; interval?: number };
}

/** The client's security: the plugin for `connect`, and what the application controls. */
export interface Security extends SecurityPlugin {
  /** Turns our direction on or off (off is refused where security is required). The marker
   * goes through the queue: frames queued before it travel as they were queued. */
  secure(on: boolean): void;
  /** Asks the server to turn its direction on or off. */
  peerSecure(on: boolean): void;
  readonly isSecure: boolean;
  readonly isPeerSecure: boolean;
  /** The last key exchange's server key was one the client pins. */
  readonly serverAuthenticated: boolean;
  /** The fingerprint of the server's key, as the last key exchange saw it. */
  readonly serverKey: string | undefined;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const u32 = (n: number) => Uint8Array.of(n >>> 24, n >>> 16, n >>> 8, n);
const lp = (b: Uint8Array) => concat(u32(b.length), b);
const fail = (code: number, reason: string) => new TrufluxError(code, reason);
const sf = (id: number, payload: Uint8Array = new Uint8Array(0)): Frame => ({ kind: SECURITY, id, payload });
const label = (l: string) => utf8.encode(LABEL_PREFIX + l);

/** Our offer: the ECDH key pair and the `KEX_INIT` payload. */
interface Offer {
  pair: EcdhKeyPair;
  payload: Uint8Array;
}

async function offer(): Promise<Offer> {
  const pair = await generateEcdh();
  return { pair, payload: concat(randomBytes(32), Uint8Array.of(1, ECDH_P256_AES128GCM, 0, 65), pair.publicKey) };
}

/** What a verified `KEX_REPLY` gives. */
interface Keys {
  c2s: Uint8Array;
  s2c: Uint8Array;
  resumption: Uint8Array;
  th2: Uint8Array;
  finished: Uint8Array;
  key?: string;
}

/** §9.1–§9.2: checks a `KEX_REPLY` against our offer and the hellos, derives the keys. */
async function reply(mine: Offer, hellos: Uint8Array, r: Uint8Array): Promise<Keys> {
  const bad = () => fail(HANDSHAKE_FAILED, 'malformed reply');
  const u16 = (at: number) => (at + 2 <= r.length ? (r[at]! << 8) | r[at + 1]! : -1);
  if (r[32] !== ECDH_P256_AES128GCM) throw fail(HANDSHAKE_FAILED, 'reply names a suite not offered');
  const pub = r.subarray(35, 35 + u16(33));
  let at = 35 + pub.length;
  const key = r.subarray(at + 2, at + 2 + u16(at));
  at += 2 + key.length;
  const body = r.subarray(0, at);
  const sig = r.subarray(at + 2, at + 2 + u16(at));
  at += 2 + sig.length;
  const finished = r.subarray(at);
  if (pub.length !== 65 || !((key.length === 0 && sig.length === 0) || (key.length === 65 && sig.length === 64)) || finished.length !== 32) throw bad();
  const shared = await ecdhShared(mine.pair.privateKey, pub);
  const t1 = concat(hellos, lp(mine.payload), body);
  const th = await sha256(t1);
  const prk = await hkdfExtract(new Uint8Array(32), shared);
  const secret = (l: string) => hkdfExpand(prk, concat(label(l), th), 32);
  if (key.length && !(await verifyEcdsa(key, sig, concat(utf8.encode(LABEL_PREFIX + 'server signature'), th)))) {
    throw fail(UNTRUSTED_SERVER, 'the server key signature does not verify');
  }
  const t2 = concat(t1, r.subarray(body.length, body.length + 2 + sig.length));
  if (!(await verifyHmac(await secret('server finished'), finished, await sha256(t2)))) throw fail(HANDSHAKE_FAILED, 'finished MAC does not verify');
  const th2 = await sha256(concat(t2, finished));
  return {
    c2s: await secret('c2s'),
    s2c: await secret('s2c'),
    resumption: await secret('resumption'),
    th2,
    finished: await hmac(await secret('client finished'), th2),
    key: key.length ? hex(await sha256(key)) : undefined,
  };
}

/** The resume binder of §11.3. */
export const binder = (secret: Uint8Array, th2: Uint8Array) => hmac(secret, concat(utf8.encode(LABEL_PREFIX + 'binder'), th2));

const isControl = (kind: number) => kind < 16;

/** The client's security plugin. */
export function security(options: SecurityOptions = {}): Security {
  const pins = (options.pins ?? []).map((p) => p.toLowerCase());
  const policy = { records: 2 ** 24, octets: 2 ** 30, interval: 3600000, ...options.rekey };
  const required = !!options.required;
  /** The session's resume secret (its first key exchange) and whether it was ever secure. */
  let secret: Uint8Array | undefined;
  let everSecure = false;
  let conn: ReturnType<typeof connection> | undefined;
  let authenticated = false;
  let serverKey: string | undefined;

  /** Checks the server key against the pins (and pins it on first use). */
  const trust = (key: string | undefined) => {
    serverKey = key;
    authenticated = !!key && pins.includes(key);
    if (pins.length && !authenticated) throw Object.assign(fail(UNTRUSTED_SERVER, key ? 'the server key is not pinned' : 'the server sent no key'), { refused: true });
    if (options.tofu && key && !pins.length) pins.push(key);
  };

  function connection(link: Link, hellos: Uint8Array) {
    let sealer: Sealer | undefined;
    let opener: Opener | undefined;
    let tx = false;
    let rx = false;
    let strict = required;
    let hold = false;
    let kex: 'idle' | 'running' | 'done' | 'failed' = 'idle';
    let mine: Offer | undefined;
    let wants: boolean | undefined;
    let records = 0;
    let octets = 0;
    let since = 0;
    const E = link.engine;

    const install = (s: Uint8Array) => {
      sealer = new Sealer(s);
      since = link.now();
      records = octets = 0;
    };

    const start = async () => {
      if (kex !== 'idle') return;
      kex = 'running';
      try {
        mine = await offer();
        E.ctl(sf(KEX_INIT, mine.payload));
      } catch (error: any) {
        kex = 'failed';
        E.fail(error.code ?? INTERNAL_ERROR, error.message);
      }
      link.flush();
    };

    const keyed = (k: Keys) => {
      opener = new Opener(k.s2c);
      secret ??= k.resumption;
      E.ctl(sf(FINISHED, k.finished));
      E.ctl(() => install(k.c2s));
      kex = 'done';
      link.emit('handshaked', 'ecdh-p256-aes128gcm');
      if (wants) E.ctl(sf(SEC_ON));
      wants = undefined;
    };

    const c = {
      strict: (on: boolean) => (strict ||= on),
      keys(k: Keys) {
        opener = new Opener(k.s2c);
        install(k.c2s);
        kex = 'done';
      },

      rx(f: Frame, sealed: boolean) {
        const data = !isControl(f.kind);
        if (sealed) {
          if (data && !rx) throw fail(BAD_RECORD, 'protected frame in a plain direction');
        } else if (!opener) {
          if (f.kind === SECURITY && (f.id === SEC_ON || f.id === SEC_OFF || f.id === REKEY)) throw fail(BAD_RECORD, 'unprotected security record');
        } else if (f.kind === CLOSE) return true;
        else if (rx || !data) throw fail(UNEXPECTED_PLAINTEXT, 'plain frame where protection is due');
        if (data && strict && !rx) throw fail(SECURITY_REQUIRED, 'a plain frame from a peer that must be secure');
        return false;
      },

      on(f: Frame, now: number): Promise<unknown> | void {
        const id = f.id;
        if (id === SEC_ON || id === SEC_OFF) {
          if (id === SEC_OFF && strict) throw fail(SECURITY_REQUIRED, 'the peer turned its direction off');
          link.emit('peerSecure', (rx = id === SEC_ON));
        } else if (id === REKEY) opener!.rekey();
        else if (id === REQUEST) {
          const on = f.payload[0];
          if (f.payload.length !== 1 || on! > 1) throw fail(HANDSHAKE_FAILED, 'malformed security request');
          if (!on && strict) {
            E.ctl(coded(3, 0, SECURITY_REQUIRED, 'this side must stay secure'));
            link.emit('error', fail(SECURITY_REQUIRED, 'refused to turn security off'));
          } else if (on && !sealer) {
            wants = true;
            start();
          } else if (sealer) E.ctl(sf(on ? SEC_ON : SEC_OFF));
        } else if (id === START) {
          if (kex === 'done') throw fail(HANDSHAKE_FAILED, 'START after keys');
          start();
        } else if (id === KEX_REPLY && kex === 'running' && mine) {
          const m = mine;
          mine = undefined;
          return reply(m, hellos, f.payload).then(
            (k) => {
              trust(k.key);
              keyed(k);
            },
            (error) => {
              kex = 'failed';
              throw error;
            },
          );
        } else if (id === KEX_FAIL && kex === 'running') {
          kex = 'failed';
          const r = parseClose(f.payload);
          link.emit('failSecure', r.code, r.reason);
          if (required || !options.fallbackPlain) throw fail(SECURITY_REQUIRED, 'no common security suite');
        } else throw fail(HANDSHAKE_FAILED, 'unexpected handshake message');
        void now;
      },

      tx(f: Frame, out: Out[], now: number) {
        const marker = f.kind === SECURITY && (f.id === SEC_ON || f.id === SEC_OFF);
        const on = f.id === SEC_ON;
        // A redundant toggle, or one before keys, changes nothing.
        if (marker && (on === tx || !sealer)) return;
        if (!sealer || (!tx && !isControl(f.kind))) return void out.push([f, false]);
        out.push([f, true]);
        records++;
        octets += f.payload.length;
        if (marker) {
          everSecure ||= on;
          hold &&= !on;
          link.emit('secure', (tx = on));
        }
        if (records >= Math.min(policy.records, 2 ** 32 - 1) || octets >= Math.min(policy.octets, 2 ** 36 - 2 ** 24) || now - since >= policy.interval) {
          out.push([sf(REKEY), true]);
          records = octets = 0;
          since = now;
        }
      },

      hold: () => hold,

      seal(f: Frame) {
        const p = sealer!.seal(f);
        // The next record uses the next keys (§9.5).
        if (f.kind === SECURITY && f.id === REKEY) sealer!.rekey();
        return p;
      },

      open: (f: Frame) => (opener ? opener.open(f) : Promise.reject(fail(BAD_RECORD, 'protected record before keys'))),

      start() {
        if (strict || everSecure) {
          hold = true;
          if (!sealer) return E.fail(SECURITY_REQUIRED, 'security could not be established');
          E.ctl(sf(SEC_ON));
        }
      },

      own(on: boolean) {
        if (!on && strict) throw fail(SECURITY_REQUIRED, 'this connection must stay secure');
        if (on && !sealer) {
          wants = true;
          start();
        } else E.push(sf(on ? SEC_ON : SEC_OFF));
        link.flush();
      },

      ask(on: boolean) {
        E.ctl(sf(REQUEST, Uint8Array.of(on ? 1 : 0)));
        link.flush();
      },

      get secureTx() {
        return tx;
      },
      get secureRx() {
        return rx;
      },
    };
    return c;
  }

  /** A plain close during a keyed opening: a failed attempt, not a refusal (§4.1). */
  const attempt = (f: Frame) => {
    const r = parseClose(f.payload);
    return fail(r.code, `unprotected close during the opening: ${r.reason}`);
  };

  const plugin: Security = {
    keyed(plan: Credentials) {
      // A keyed session resumes only keyed, a session never keyed only plain (§11.3).
      if (plan.resume) return !!secret;
      if (!globalThis.crypto?.subtle) return false;
      const o = options.opening;
      return o === 'keyed' || required || (o !== 'plain' && !!(plan.token || plan.session || pins.length || options.tofu));
    },

    async open(io: OpeningIo, plan: Credentials, link: Link) {
      // A new session has its own resume secret.
      if (!plan.resume) {
        secret = undefined;
        everSecure = false;
      }
      const first = helloFrame({ kex: true });
      const mine = await offer();
      io.send(first);
      io.send(sf(KEX_INIT, mine.payload));
      let f = await io.next();
      if (f.kind === CLOSE && !f.tag) throw attempt(f);
      if (f.kind !== HELLO || f.tag) throw fail(PROTOCOL_ERROR, 'expected the server hello');
      parseAnswer(f.payload);
      const hellos = concat(lp(first.payload), lp(f.payload));
      f = await io.next();
      if (f.kind === CLOSE && !f.tag) throw attempt(f);
      if (f.kind !== SECURITY || f.tag || (f.id !== KEX_REPLY && f.id !== KEX_FAIL)) throw fail(HANDSHAKE_FAILED, 'expected the key exchange reply');
      if (f.id === KEX_FAIL) {
        const r = parseClose(f.payload);
        link.emit('failSecure', r.code, r.reason);
        if (required || !options.fallbackPlain) {
          io.send(coded(CLOSE, 0, SECURITY_REQUIRED, 'no common security suite'));
          throw fail(SECURITY_REQUIRED, 'no common security suite');
        }
        const hello = helloFrame(plan);
        io.send(hello);
        const a = await io.next();
        if (a.kind === CLOSE) throw Object.assign(fail(parseClose(a.payload).code, parseClose(a.payload).reason), { refused: true });
        return { answer: parseAnswer(a.payload), sec: (conn = connection(link, hellos)) };
      }
      let k: Keys;
      try {
        k = await reply(mine, hellos, f.payload);
        trust(k.key);
      } catch (error: any) {
        io.send(coded(CLOSE, 0, error.code ?? HANDSHAKE_FAILED, error.message));
        throw error;
      }
      const c = connection(link, hellos);
      c.keys(k);
      const r = plan.resume;
      const creds = { ...plan, secure: required, resume: r && { ...r, binder: await binder(secret!, k.th2) } };
      io.send(sf(FINISHED, k.finished));
      io.send(await c.seal(helloFrame(creds)));
      f = await io.next();
      if (!f.tag) {
        if (f.kind === CLOSE) throw attempt(f);
        throw fail(UNEXPECTED_PLAINTEXT, 'plain answer to a keyed opening');
      }
      const a = await c.open(f);
      if (a.kind === CLOSE) {
        const x = parseClose(a.payload);
        throw Object.assign(fail(x.code, x.reason), { refused: true });
      }
      if (a.kind !== HELLO) throw fail(PROTOCOL_ERROR, 'expected the server answer');
      const answer = parseAnswer(a.payload);
      secret ??= k.resumption;
      c.strict(answer.secure);
      link.emit('handshaked', 'ecdh-p256-aes128gcm');
      return { answer, sec: (conn = c) };
    },

    plain(sent: Uint8Array, got: Uint8Array, link: Link) {
      return (conn = connection(link, concat(lp(sent), lp(got))));
    },

    secure(on: boolean) {
      if (!conn) throw fail(NO_COMMON_SUITE, 'not connected');
      conn.own(on);
    },
    peerSecure(on: boolean) {
      if (!conn) throw fail(NO_COMMON_SUITE, 'not connected');
      conn.ask(on);
    },
    get isSecure() {
      return !!conn?.secureTx;
    },
    get isPeerSecure() {
      return !!conn?.secureRx;
    },
    get serverAuthenticated() {
      return authenticated;
    },
    get serverKey() {
      return serverKey;
    },
  };
  return plugin;
}

