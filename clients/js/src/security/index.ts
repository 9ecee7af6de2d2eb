/**
 * `truflux/security`: the building blocks of in-band security (PROTOCOL.md §9) on WebCrypto:
 * HKDF with the label prefix, AES-128-GCM records, the PHT id mapping, ECDH P-256, ECDSA
 * P-256 verification, HMAC and SHA-256.
 */

export * from './crypto.js';
export * from './pht.js';
export * from './record.js';
export * from './plugin.js';
