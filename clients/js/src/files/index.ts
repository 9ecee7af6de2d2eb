/** `truflux/files`: what file transfers need beside the core (PROTOCOL.md §10): an
 * incremental SHA-256 to verify content while holding only the credit window. */

export { Sha256, sha256Sync } from './sha256.js';
export * from './transfer.js';
