/**
 * The cryptographic building blocks of PROTOCOL.md §9, on WebCrypto alone
 * (`globalThis.crypto.subtle`: browsers in secure contexts, Node ≥ 20): SHA-256, HMAC-SHA-256,
 * HKDF-SHA-256, ECDH P-256 and ECDSA P-256 / SHA-256 verification. Public keys are raw
 * 65-octet uncompressed points, signatures 64-octet r ‖ s.
 */

import { HANDSHAKE_FAILED, INTERNAL_ERROR, TrufluxError } from '../code.js';
import { utf8 } from '../octets.js';

/** The prefix of every key schedule label. */
export const LABEL_PREFIX = 'truflux v2 ';

/** A failed security operation; `code` is the std code it ends the connection with. */
export class SecurityError extends TrufluxError {
  override name = 'SecurityError';
}

const P256 = { name: 'ECDH', namedCurve: 'P-256' } as const;

/** WebCrypto's `subtle`, or a `SecurityError` where there is none (an insecure context). */
export function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new SecurityError(INTERNAL_ERROR, 'WebCrypto is not available (a page needs a secure context)');
  return s;
}

/** `n` random octets. */
export function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/** The octets of several parts, one after the other. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** SHA-256 of `data`, in one piece. */
export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest('SHA-256', data as BufferSource));
}

function hmacKey(key: Uint8Array, usage: KeyUsage): Promise<CryptoKey> {
  // WebCrypto refuses an empty HMAC key; HMAC pads keys with zeros, so one zero octet is the same key.
  const raw = key.length ? key : new Uint8Array(1);
  return subtle().importKey('raw', raw as BufferSource, { name: 'HMAC', hash: 'SHA-256' }, false, [usage]);
}

/** HMAC-SHA-256 of `data` under `key`. */
export async function hmac(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().sign('HMAC', await hmacKey(key, 'sign'), data as BufferSource));
}

/** Whether `mac` is the HMAC-SHA-256 of `data` under `key`, compared in constant time. */
export async function verifyHmac(key: Uint8Array, mac: Uint8Array, data: Uint8Array): Promise<boolean> {
  return subtle().verify('HMAC', await hmacKey(key, 'verify'), mac as BufferSource, data as BufferSource);
}

/** HKDF-Extract (RFC 5869) with SHA-256: the PRK of `ikm` under `salt`. */
export function hkdfExtract(salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return hmac(salt, ikm);
}

/** HKDF-Expand (RFC 5869) with SHA-256: `length` octets (at most 8160) from a PRK. WebCrypto's
 * HKDF always extracts first, so this is built on HMAC. */
export async function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  if (length > 255 * 32) throw new RangeError('HKDF-SHA-256 expands to at most 8160 octets');
  const key = await hmacKey(prk, 'sign');
  const out = new Uint8Array(length);
  let block = new Uint8Array(0);
  for (let i = 1, at = 0; at < length; i++, at += 32) {
    const input = concat(block, info, new Uint8Array([i]));
    block = new Uint8Array(await subtle().sign('HMAC', key, input as BufferSource));
    out.set(block.subarray(0, length - at), at);
  }
  return out;
}

/** `expand(s, label, n)` of PROTOCOL.md §9.2: HKDF-Expand(s, prefix ‖ label, n). */
export function expandLabel(secret: Uint8Array, label: string, length: number, prefix = LABEL_PREFIX): Promise<Uint8Array> {
  return hkdfExpand(secret, utf8.encode(prefix + label), length);
}

/** An ECDH P-256 key pair; `publicKey` is the raw 65-octet point to send. */
export interface EcdhKeyPair {
  privateKey: CryptoKey;
  publicKey: Uint8Array;
}

/** A fresh ECDH P-256 key pair; the private key cannot be exported. */
export async function generateEcdh(): Promise<EcdhKeyPair> {
  const pair = (await subtle().generateKey(P256, false, ['deriveBits'])) as CryptoKeyPair;
  return { privateKey: pair.privateKey, publicKey: new Uint8Array(await subtle().exportKey('raw', pair.publicKey)) };
}

const refused = (what: string) => new SecurityError(HANDSHAKE_FAILED, what);

/** Imports a raw public point: exactly 65 octets, uncompressed (04 ‖ x ‖ y), on P-256. */
async function importPoint(raw: Uint8Array, name: 'ECDH' | 'ECDSA', usages: KeyUsage[]): Promise<CryptoKey> {
  if (raw.length !== 65 || raw[0] !== 4) throw refused('public key is not a 65-octet uncompressed P-256 point');
  try {
    return await subtle().importKey('raw', raw as BufferSource, { name, namedCurve: 'P-256' }, true, usages);
  } catch {
    throw refused('public key is not a point on P-256');
  }
}

/** The ECDH shared secret with a peer's raw public point: the x coordinate, 32 octets.
 * Anything but a valid uncompressed P-256 point is a `HANDSHAKE_FAILED` `SecurityError`. */
export async function ecdhShared(privateKey: CryptoKey, peerPublic: Uint8Array): Promise<Uint8Array> {
  const peer = await importPoint(peerPublic, 'ECDH', []);
  try {
    return new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: peer }, privateKey, 256));
  } catch {
    throw refused('ECDH agreement failed');
  }
}

/** Whether `signature` (64 octets, r ‖ s) is an ECDSA P-256 / SHA-256 signature of `data`
 * under the raw public point `publicKey`. A malformed key is a `HANDSHAKE_FAILED`
 * `SecurityError`; a signature of another length does not verify. */
export async function verifyEcdsa(publicKey: Uint8Array, signature: Uint8Array, data: Uint8Array): Promise<boolean> {
  const key = await importPoint(publicKey, 'ECDSA', ['verify']);
  if (signature.length !== 64) return false;
  return subtle().verify({ name: 'ECDSA', hash: 'SHA-256' }, key, signature as BufferSource, data as BufferSource);
}
