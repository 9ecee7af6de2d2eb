/**
 * The cryptographic building blocks of PROTOCOL.md §9, on WebCrypto alone
 * (`globalThis.crypto.subtle`: browsers in secure contexts, Node ≥ 20): SHA-256, HMAC-SHA-256,
 * HKDF-SHA-256, ECDH P-256 and ECDSA P-256 / SHA-256 verification. Public keys are raw
 * 65-octet uncompressed points, signatures 64-octet r ‖ s.
 */

import { HANDSHAKE_FAILED, INTERNAL_ERROR, TrufluxError } from '../code.js';
import { concat, uint, utf8 } from '../octets.js';

/** The prefix of every key schedule label. */
export const LABEL_PREFIX = 'truflux v2 ';

/** A failed security operation; `code` is the std code it ends the connection with. */
export class SecurityError extends TrufluxError {
  override name = 'SecurityError';
}

/** WebCrypto's `subtle`, or a `SecurityError` where there is none (an insecure context). */
export function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new SecurityError(INTERNAL_ERROR, 'no WebCrypto');
  return s;
}

/** `n` random octets. */
export const randomBytes = (n: number) => crypto.getRandomValues(new Uint8Array(n));

const bytes = async (p: Promise<ArrayBuffer>) => new Uint8Array(await p);

/** SHA-256 of `data`, in one piece. */
export const sha256 = (data: Uint8Array) => bytes(subtle().digest('SHA-256', data as BufferSource));

// WebCrypto refuses an empty HMAC key; HMAC pads keys with zeros, so one zero octet is the same key.
const hmacKey = (key: Uint8Array) => subtle().importKey('raw', (key.length ? key : new Uint8Array(1)) as BufferSource, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);

/** HMAC-SHA-256 of `data` under `key`. */
export const hmac = async (key: Uint8Array, data: Uint8Array) => bytes(subtle().sign('HMAC', await hmacKey(key), data as BufferSource));

/** Whether `mac` is the HMAC-SHA-256 of `data` under `key`, compared in constant time. */
export const verifyHmac = async (key: Uint8Array, mac: Uint8Array, data: Uint8Array) =>
  subtle().verify('HMAC', await hmacKey(key), mac as BufferSource, data as BufferSource);

/** HKDF-Extract (RFC 5869) with SHA-256: the PRK of `ikm` under `salt`. */
export const hkdfExtract = hmac;

/** HKDF-Expand (RFC 5869) with SHA-256: `length` octets (at most 8160) from a PRK. WebCrypto's
 * HKDF always extracts first, so this is built on HMAC. */
export async function hkdfExpand(prk: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array> {
  const blocks = [new Uint8Array(0)];
  if (length > 8160) throw RangeError();
  for (let i = 1; i * 32 < length + 32; i++) blocks.push(await hmac(prk, concat([blocks[i - 1]!, info, uint(i, 1)])));
  return concat(blocks).subarray(0, length);
}

/** `expand(s, label, n)` of PROTOCOL.md §9.2: HKDF-Expand(s, prefix ‖ label, n). */
export const expandLabel = (secret: Uint8Array, label: string, length: number, prefix = LABEL_PREFIX) => hkdfExpand(secret, utf8.encode(prefix + label), length);

/** An ECDH P-256 key pair; `publicKey` is the raw 65-octet point to send. */
export interface EcdhKeyPair {
  privateKey: CryptoKey;
  publicKey: Uint8Array;
}

/** A fresh ECDH P-256 key pair; the private key cannot be exported. */
export async function generateEcdh(): Promise<EcdhKeyPair> {
  const pair = (await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits'])) as CryptoKeyPair;
  return { privateKey: pair.privateKey, publicKey: await bytes(subtle().exportKey('raw', pair.publicKey)) };
}

/** `HANDSHAKE_FAILED` when `p` fails. */
const checked = <T>(p: () => Promise<T>) => p().catch(() => Promise.reject(new SecurityError(HANDSHAKE_FAILED)));

/** Imports a raw public point: exactly 65 octets, uncompressed (04 ‖ x ‖ y), on P-256. */
const point = (raw: Uint8Array, name: string, usages: KeyUsage[]) =>
  checked(() => (raw.length != 65 || raw[0] != 4 ? Promise.reject() : subtle().importKey('raw', raw as BufferSource, { name, namedCurve: 'P-256' }, true, usages)));

/** The ECDH shared secret with a peer's raw public point: the x coordinate, 32 octets.
 * Anything but a valid uncompressed P-256 point is a `HANDSHAKE_FAILED` `SecurityError`. */
export const ecdhShared = async (privateKey: CryptoKey, peerPublic: Uint8Array) => {
  const peer = await point(peerPublic, 'ECDH', []);
  return checked(() => bytes(subtle().deriveBits({ name: 'ECDH', public: peer }, privateKey, 256)));
};

/** Whether `signature` (64 octets, r ‖ s) is an ECDSA P-256 / SHA-256 signature of `data`
 * under the raw public point `publicKey`. A malformed key is a `HANDSHAKE_FAILED`
 * `SecurityError`; a signature of another length does not verify. */
export async function verifyEcdsa(publicKey: Uint8Array, signature: Uint8Array, data: Uint8Array): Promise<boolean> {
  const key = await point(publicKey, 'ECDSA', ['verify']);
  return signature.length == 64 && subtle().verify({ name: 'ECDSA', hash: 'SHA-256' }, key, signature as BufferSource, data as BufferSource);
}
