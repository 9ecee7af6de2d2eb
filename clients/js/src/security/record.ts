/**
 * Record protection with AES-128-GCM (PROTOCOL.md §9.3), from one direction's traffic secret.
 *
 * A protected frame keeps its kind, carries the PHT-mapped id and the ciphertext's length in a
 * header with the protected bit set, and the 96-bit GCM tag after those 9 octets. The nonce is
 * the iv XOR the record's sequence number (u64, in the last 8 octets); the 9 header octets are
 * the additional data. The sequence number is never sent: both sides count the records of a
 * direction from 0 under each key, so a replayed, reordered, dropped or forged record fails.
 */

import { BAD_RECORD, INTERNAL_ERROR, PROTOCOL_ERROR } from '../code.js';
import { header, MAX_ID, PROTECTED, TAG_LEN, type Frame } from '../frame.js';
import { concat, uint } from '../octets.js';
import { expandLabel, LABEL_PREFIX, SecurityError, subtle } from './crypto.js';
import { Pht } from './pht.js';

/** The keys of one direction under one traffic secret. */
export interface DirectionKeys {
  /** AES-128-GCM key: expand(s, "key", 16). */
  key: CryptoKey;
  /** expand(s, "iv", 12). */
  iv: Uint8Array;
  /** The id mapping keyed by expand(s, "pht", 16). */
  pht: Pht;
}

/** The keys a traffic secret gives (PROTOCOL.md §9.2). */
export async function directionKeys(secret: Uint8Array, prefix = LABEL_PREFIX): Promise<DirectionKeys> {
  const [key, iv, pht] = await Promise.all(['key', 'iv', 'pht'].map((l, i) => expandLabel(secret, l, 16 - 4 * +(i == 1), prefix)));
  return { key: await subtle().importKey('raw', key as BufferSource, 'AES-GCM', false, ['encrypt', 'decrypt']), iv: iv!, pht: new Pht(pht!) };
}

/** The traffic secret after a rekey: expand(s, "next", 32). */
export const nextSecret = (secret: Uint8Array, prefix = LABEL_PREFIX) => expandLabel(secret, 'next', 32, prefix);

/** A sender never seals more records, nor more payload octets, under one key (§9.5). */
const LIMIT = 2 ** 32;
const ignore = () => {};

/** One direction's keys and sequence number. Every call takes its keys and sequence number
 * when it is made, so calls made in record order stay in record order, whenever they finish. */
class Direction {
  private secret: Promise<Uint8Array>;
  protected keys!: Promise<DirectionKeys>;
  /** Records handled under the current key. */
  sequence = 0;
  /** Payload octets handled under the current key. */
  protected octets = 0;
  protected last: Promise<unknown> = Promise.resolve();

  constructor(
    secret: Uint8Array,
    readonly prefix = LABEL_PREFIX,
  ) {
    this.secret = Promise.resolve(secret.slice());
    this.next();
  }

  private next() {
    // A failure is reported by the first record that needs the keys, not as unhandled.
    (this.keys = this.secret.then((s) => directionKeys(s, this.prefix))).catch(ignore);
    this.sequence = this.octets = 0;
  }

  /** Moves to the next key generation (after a `REKEY` record): the next record is sealed or
   * opened with the keys of expand(s, "next", 32), from sequence number 0. */
  rekey(): void {
    this.secret = this.secret.then((s) => nextSecret(s, this.prefix));
    this.next();
  }

  /** AES-GCM `op` of record `seq` under `keys`, with the header `kind`, `id` (mapped), `n` as
   * additional data. */
  protected async gcm(op: 'encrypt' | 'decrypt', keys: Promise<DirectionKeys>, seq: number, kind: number, id: number, n: number, data: Uint8Array) {
    const { key, iv } = await keys;
    const nonce = concat([uint(0, 4), uint(Math.floor(seq / LIMIT), 4), uint(seq, 4)]).map((x, i) => x ^ iv[i]!);
    const params = { name: 'AES-GCM', iv: nonce, additionalData: header(PROTECTED | kind, id, n), tagLength: 96 };
    return new Uint8Array(await subtle()[op](params, key, data as BufferSource));
  }
}

/** Seals the frames of the direction we send. */
export class Sealer extends Direction {
  /** The protected form of a plain frame: mapped id, ciphertext, tag. */
  seal({ kind, id, payload }: Frame): Promise<Frame> {
    const keys = this.keys;
    const seq = this.sequence++;
    if (!(id >= 0 && id <= MAX_ID)) return Promise.reject(new SecurityError(PROTOCOL_ERROR));
    // Rekey first: the key has sealed all it may.
    if (seq >= LIMIT || (this.octets += payload.length) > 2 ** 36) return Promise.reject(new SecurityError(INTERNAL_ERROR));
    return keys.then(async ({ pht }) => {
      const mapped = pht.map(id);
      const sealed = await this.gcm('encrypt', keys, seq, kind, mapped, payload.length, payload);
      return { kind, id: mapped, payload: sealed.subarray(0, payload.length), tag: sealed.subarray(payload.length) };
    });
  }
}

/** Opens the frames of the direction we receive, one after the other: once a record fails,
 * every later one fails too (nothing after a bad record is delivered). */
export class Opener extends Direction {
  /** The plain frame a protected one carries, with its id unmapped; a `BAD_RECORD`
   * `SecurityError` when it does not verify. */
  open({ kind, id, payload, tag }: Frame): Promise<Frame> {
    const keys = this.keys;
    const seq = this.sequence++;
    const opened = this.last.then(async () => {
      try {
        if (tag?.length != TAG_LEN || seq >= LIMIT) throw 0;
        return { kind, id: (await keys).pht.unmap(id), payload: await this.gcm('decrypt', keys, seq, kind, id, payload.length, concat([payload, tag])) };
      } catch {
        throw new SecurityError(BAD_RECORD);
      }
    });
    (this.last = opened).catch(ignore);
    return opened;
  }
}
