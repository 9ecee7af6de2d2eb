/**
 * In-band security for the client (PROTOCOL.md §4.1, §9, §11.3): the keyed opening, the key
 * exchange (ECDH P-256 + AES-128-GCM, the one suite WebCrypto can do), server key pinning, the
 * receiving table of §9.3, toggles, requests, rotation, and the resume binder.
 */

import {
  ABNORMAL,
  BAD_RECORD,
  HANDSHAKE_FAILED,
  INTERNAL_ERROR,
  NO_COMMON_SUITE,
  PROTOCOL_ERROR,
  SECURITY_REQUIRED,
  error,
  UNEXPECTED_PLAINTEXT,
  UNTRUSTED_SERVER,
} from '../code.js';
import type { Link, OpeningIo, Sec, SecurityPlugin } from '../client.js';
import { coded, parseClose } from '../control.js';
import { frame, type Frame } from '../frame.js';
import { helloFrame, parseAnswer, type Answer, type Credentials } from '../hello.js';
import { CLOSE, ERROR, HELLO, SECURITY } from '../kind.js';
import { concat, getUint, hex, uint, utf8 } from '../octets.js';
import { ecdhShared, generateEcdh, hkdfExpand, hmac, LABEL_PREFIX, randomBytes, sha256, verifyEcdsa, verifyHmac } from './crypto.js';
import { Opener, Sealer } from './record.js';

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
const SUITE = 'ecdh-p256-aes128gcm';

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
  setOwnSecurity(on: boolean): void;
  /** Asks the server to turn its direction on or off. */
  setPeerSecurity(on: boolean): void;
  readonly isSecure: boolean;
  readonly isPeerSecure: boolean;
  /** The last key exchange's server key was one the client pins. */
  readonly serverAuthenticated: boolean;
  /** The fingerprint of the server's key, as the last key exchange saw it. */
  readonly serverKey: string | undefined;
}

const lp = (b: Uint8Array) => concat([uint(b.length, 4), b]);
const sf = (id: number, payload?: Uint8Array) => frame(SECURITY, payload, id);
const label = (l: string) => utf8.encode(LABEL_PREFIX + l);

/** The resume binder of §11.3. */
export const binder = (secret: Uint8Array, th2: Uint8Array) => hmac(secret, concat([label('binder'), th2]));

/** Our offer: the ECDH key pair and the `KEX_INIT` payload. */
async function offer() {
  const pair = await generateEcdh();
  return [pair.privateKey, concat([randomBytes(32), Uint8Array.of(1, ECDH_P256_AES128GCM, 0, 65), pair.publicKey])] as const;
}

type Offer = Awaited<ReturnType<typeof offer>>;

/** §9.1–§9.2: checks a `KEX_REPLY` against our offer and the hellos; the keys it gives:
 * c2s, s2c, resumption, th2, client finished, the server key's fingerprint. */
async function reply([priv, init]: Offer, hellos: Uint8Array, r: Uint8Array) {
  // Each length-prefixed field in turn: the public value, the server key, the signature.
  const fields: Uint8Array[] = [];
  let at = 33;
  for (let i = 0; i < 3; i++) fields.push(r.subarray(at + 2, (at += 2 + getUint(r, at, 2))));
  const [pub, key, sig] = fields as [Uint8Array, Uint8Array, Uint8Array];
  const finished = r.subarray(at);
  const body = r.subarray(0, at - 2 - sig.length);
  if (r[32] != ECDH_P256_AES128GCM || !(key.length + sig.length == 0 || (key.length == 65 && sig.length == 64)) || finished.length != 32) throw error(HANDSHAKE_FAILED);
  const t1 = concat([hellos, lp(init), body]);
  const th = await sha256(t1);
  const prk = await hmac(new Uint8Array(32), await ecdhShared(priv, pub));
  const secret = (l: string) => hkdfExpand(prk, concat([label(l), th]), 32);
  if (key.length && !(await verifyEcdsa(key, sig, concat([label('server signature'), th])))) throw error(UNTRUSTED_SERVER);
  const t2 = concat([t1, r.subarray(body.length, at)]);
  if (!(await verifyHmac(await secret('server finished'), finished, await sha256(t2)))) throw error(HANDSHAKE_FAILED);
  const th2 = await sha256(concat([t1, r.subarray(body.length)]));
  return [await secret('c2s'), await secret('s2c'), await secret('resumption'), th2, await hmac(await secret('client finished'), th2), key.length ? hex(await sha256(key)) : undefined] as const;
}

type Keys = Awaited<ReturnType<typeof reply>>;

/** One connection's security, and what the application controls of it. */
type Connection = Sec & { own(on: boolean): void; ask(on: boolean): void; readonly state: boolean[] };

/** The client's security plugin. */
export function security(options: SecurityOptions = {}): Security {
  const pins = (options.pins ?? []).map((p) => p.toLowerCase());
  const { records = 2 ** 24, octets = 2 ** 30, interval = 3600000 } = options.rekey ?? {};
  const required = !!options.required;
  /** The session's resume secret (its first key exchange) and whether our direction was ever
   * secure in it. */
  let secret: Uint8Array | undefined;
  let ever = false;
  let conn: Connection | undefined;
  let authenticated = false;
  let serverKey: string | undefined;

  /** Checks the server key against the pins (and pins it on first use). */
  const trust = (k: Keys) => {
    serverKey = k[5];
    authenticated = !!serverKey && pins.includes(serverKey);
    if (pins.length && !authenticated) throw error(UNTRUSTED_SERVER);
    if (options.tofu && serverKey && !pins.length) pins.push(serverKey);
    secret ??= k[2];
  };

  /** One connection: its keys (when the opening exchanged them) and its rules. */
  function connection(link: Link, hellos: Uint8Array, strict: boolean, sealer?: Sealer, opener?: Opener): Connection {
    let tx = false;
    let rx = false;
    /** 0 idle, 1 running, 2 done (or failed). */
    let kex = sealer ? 2 : 0;
    let mine: Offer | undefined;
    let next: Sealer | undefined;
    let wants = false;
    let sealed = 0;
    let sent = 0;
    let since = Date.now();
    let chain: Promise<unknown> = Promise.resolve();

    const start = async () => {
      if (kex) return;
      kex = 1;
      try {
        mine = await offer();
        link.ctl(sf(KEX_INIT, mine[1]));
      } catch (e: any) {
        kex = 2;
        link.fail(e.code ?? INTERNAL_ERROR);
      }
      link.flush();
    };

    const own = (on: boolean) => {
      if (!on && strict) throw error(SECURITY_REQUIRED);
      if (on && !sealer) (wants = true), start();
      else link.push(sf(on ? SEC_ON : SEC_OFF));
      link.flush();
    };

    const c: Connection = {
      async rx(f) {
        const { kind, id, tag } = f;
        const data = kind > 15;
        if (tag) {
          if (!opener || (data && !rx)) throw error(BAD_RECORD);
          f = await opener.open(f);
        } else if (!opener) {
          if (kind == SECURITY && id > 7 && id != REQUEST) throw error(BAD_RECORD);
        } else if (kind == CLOSE) throw error(ABNORMAL);
        else if (rx || !data) throw error(UNEXPECTED_PLAINTEXT);
        if (data && strict && !rx) throw error(SECURITY_REQUIRED);
        if (f.kind != SECURITY) return f;
        const p = f.payload;
        if (f.id == SEC_ON || f.id == SEC_OFF) {
          if (f.id == SEC_OFF && strict) throw error(SECURITY_REQUIRED);
          link.emit('peerSecure', (rx = f.id == SEC_ON));
        } else if (f.id == REKEY) opener!.rekey();
        else if (f.id == REQUEST) {
          if (p.length != 1 || p[0]! > 1) throw error(HANDSHAKE_FAILED);
          if (!p[0] && strict) {
            link.ctl(coded(ERROR, 0, SECURITY_REQUIRED));
            link.emit('error', error(SECURITY_REQUIRED));
          } else if (sealer) link.ctl(sf(p[0] ? SEC_ON : SEC_OFF));
          else if (p[0]) (wants = true), start();
        } else if (f.id == START && kex < 2) start();
        else if (f.id == KEX_REPLY && mine) {
          const k = await reply(mine, hellos, p);
          trust(k);
          opener = new Opener(k[1]);
          next = new Sealer(k[0]);
          mine = undefined;
          kex = 2;
          link.ctl(sf(FINISHED, k[4]));
          link.emit('handshaked', SUITE);
          if (wants) link.ctl(sf(SEC_ON));
        } else if (f.id == KEX_FAIL && mine) {
          const r = parseClose(p);
          mine = undefined;
          kex = 2;
          link.emit('failSecure', r.code, r.reason);
          if (required || !options.fallbackPlain) throw error(SECURITY_REQUIRED);
        } else throw error(HANDSHAKE_FAILED);
      },

      tx(f: Frame, w: (f: Frame) => void) {
        const marker = f.kind == SECURITY && (f.id == SEC_ON || f.id == SEC_OFF);
        const on = f.id == SEC_ON;
        const send = (x: Frame | Promise<Frame>) => (chain = chain.then(() => x).then(w, (e) => link.fail(e.code)));
        // A redundant toggle, or one before keys, changes nothing.
        if (marker && (on == tx || !sealer)) return;
        if (!sealer || (!tx && f.kind > 15)) {
          send(f);
          // Our direction is keyed from the frame after FINISHED (§9.2).
          if (f.kind == SECURITY && f.id == FINISHED) (sealer = next), (since = Date.now());
          return;
        }
        send(sealer.seal(f));
        sealed++;
        sent += f.payload.length;
        if (marker) {
          ever ||= on;
          link.emit('secure', (tx = on));
        }
        if (sealed >= Math.min(records, 2 ** 32 - 1) || sent >= Math.min(octets, 2 ** 36 - 2 ** 24) || Date.now() - since >= interval) {
          send(sealer.seal(sf(REKEY)));
          sealer.rekey();
          sealed = sent = 0;
          since = Date.now();
        }
      },

      own,
      ask(on: boolean) {
        link.ctl(sf(REQUEST, uint(+on, 1)));
        link.flush();
      },
      get state() {
        return [tx, rx];
      },
    };
    // Where the session must be secure, our first frame is SEC_ON (§4.1, §11.3).
    if (strict || ever) link.ctl(sf(SEC_ON));
    return (conn = c);
  }

  /** A close that arrived unprotected during a keyed opening: a failed attempt (§4.1). */
  const attempt = (f: Frame) => {
    if (f.kind == CLOSE && !f.tag) throw error(ABNORMAL, parseClose(f.payload).reason);
  };
  /** A close that is the server's refusal (believed). */
  const refusal = (f: Frame) => {
    const r = parseClose(f.payload);
    throw error(r.code, r.reason);
  };

  return {
    keyed(plan: Credentials) {
      // A new session has its own resume secret.
      if (!plan.resume) (secret = undefined), (ever = false);
      // A keyed session resumes only keyed, a session never keyed only plain (§11.3).
      if (plan.resume) return !!secret;
      const o = options.opening;
      return !!globalThis.crypto?.subtle && (o == 'keyed' || required || (o != 'plain' && !!(plan.token || plan.session || pins.length || options.tofu)));
    },

    async open(io: OpeningIo, plan: Credentials, link: Link): Promise<[Answer, Sec]> {
      const first = helloFrame({ kex: true });
      const mine = await offer();
      io.send(first);
      io.send(sf(KEX_INIT, mine[1]));
      let f = await io.next();
      attempt(f);
      if (f.kind != HELLO || f.tag) throw error(PROTOCOL_ERROR);
      parseAnswer(f.payload);
      const hellos = concat([lp(first.payload), lp(f.payload)]);
      attempt((f = await io.next()));
      if (f.kind != SECURITY || f.tag || (f.id != KEX_REPLY && f.id != KEX_FAIL)) throw error(HANDSHAKE_FAILED);
      if (f.id == KEX_FAIL) {
        const r = parseClose(f.payload);
        link.emit('failSecure', r.code, r.reason);
        if (required || !options.fallbackPlain) throw error(SECURITY_REQUIRED);
        io.send(helloFrame(plan));
        if ((f = await io.next()).kind == CLOSE) refusal(f);
        return [parseAnswer(f.payload), connection(link, hellos, false)];
      }
      const k = await reply(mine, hellos, f.payload);
      trust(k);
      const sealer = new Sealer(k[0]);
      const opener = new Opener(k[1]);
      const r = plan.resume;
      io.send(sf(FINISHED, k[4]));
      io.send(await sealer.seal(helloFrame({ ...plan, secure: required, resume: r && { ...r, binder: await binder(secret!, k[3]) } })));
      attempt((f = await io.next()));
      if (!f.tag) throw error(UNEXPECTED_PLAINTEXT);
      if ((f = await opener.open(f)).kind == CLOSE) refusal(f);
      if (f.kind != HELLO) throw error(PROTOCOL_ERROR);
      const answer = parseAnswer(f.payload);
      link.emit('handshaked', SUITE);
      return [answer, connection(link, hellos, required || answer.secure, sealer, opener)];
    },

    plain(sent: Uint8Array, got: Uint8Array, link: Link) {
      if (required) throw error(SECURITY_REQUIRED);
      return connection(link, concat([lp(sent), lp(got)]), false);
    },

    setOwnSecurity(on: boolean) {
      if (!conn) throw error(NO_COMMON_SUITE);
      conn.own(on);
    },
    setPeerSecurity(on: boolean) {
      if (!conn) throw error(NO_COMMON_SUITE);
      conn.ask(on);
    },
    get isSecure() {
      return !!conn?.state[0];
    },
    get isPeerSecure() {
      return !!conn?.state[1];
    },
    get serverAuthenticated() {
      return authenticated;
    },
    get serverKey() {
      return serverKey;
    },
  };
}
