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
import { concat, expandLabel, LABEL_PREFIX, SecurityError, subtle } from './crypto.js';
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
  const [key, iv, pht] = await Promise.all([
    expandLabel(secret, 'key', 16, prefix),
    expandLabel(secret, 'iv', 12, prefix),
    expandLabel(secret, 'pht', 16, prefix),
  ]);
  const aes = await subtle().importKey('raw', key as BufferSource, 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { key: aes, iv, pht: new Pht(pht) };
}

/** The traffic secret after a rekey: expand(s, "next", 32). */
export function nextSecret(secret: Uint8Array, prefix = LABEL_PREFIX): Promise<Uint8Array> {
  return expandLabel(secret, 'next', 32, prefix);
}

/** iv XOR (4 zero octets ‖ seq as u64 big-endian). */
function nonce(iv: Uint8Array, seq: number): Uint8Array {
  const n = iv.slice();
  const v = new DataView(n.buffer);
  v.setUint32(4, v.getUint32(4) ^ Math.floor(seq / 0x100000000));
  v.setUint32(8, v.getUint32(8) ^ seq);
  return n;
}

/** A sender never seals more records, nor more payload octets, under one key (§9.5). */
const LIMIT = 2 ** 32;
const OCTET_LIMIT = 2 ** 36;
const ignore = () => {};

/** One direction's keys and sequence number. Every call takes its keys and sequence number
 * when it is made, so calls made in record order stay in record order, whenever they finish. */
class Direction {
  private secret: Promise<Uint8Array>;
  protected keys: Promise<DirectionKeys>;
  protected seq = 0;
  /** Payload octets handled under the current key. */
  protected octets = 0;

  constructor(
    secret: Uint8Array,
    readonly prefix = LABEL_PREFIX,
  ) {
    this.secret = Promise.resolve(secret.slice());
    this.keys = directionKeys(secret, prefix);
    // A failure is reported by the first record that needs the keys, not as unhandled.
    this.keys.catch(ignore);
  }

  /** Records handled under the current key. */
  get sequence(): number {
    return this.seq;
  }

  /** Moves to the next key generation (after a `REKEY` record): the next record is sealed or
   * opened with the keys of expand(s, "next", 32), from sequence number 0. */
  rekey(): void {
    this.secret = this.secret.then((s) => nextSecret(s, this.prefix));
    this.keys = this.secret.then((s) => directionKeys(s, this.prefix));
    this.keys.catch(ignore);
    this.seq = this.octets = 0;
  }
}

/** Seals the frames of the direction we send. */
export class Sealer extends Direction {
  /** The protected form of a plain frame: mapped id, ciphertext, tag. */
  seal(frame: Frame): Promise<Frame> {
    if (!(frame.id >= 0 && frame.id <= MAX_ID)) return Promise.reject(new SecurityError(PROTOCOL_ERROR, 'id is not 31-bit'));
    if (this.seq >= LIMIT || this.octets + frame.payload.length > OCTET_LIMIT) {
      return Promise.reject(new SecurityError(INTERNAL_ERROR, 'rekey first: the key has sealed all it may'));
    }
    this.octets += frame.payload.length;
    return this.sealWith(this.keys, this.seq++, frame);
  }

  private async sealWith(keys: Promise<DirectionKeys>, seq: number, frame: Frame): Promise<Frame> {
    const { key, iv, pht } = await keys;
    const { kind, payload } = frame;
    const id = pht.map(frame.id);
    const params = { name: 'AES-GCM', iv: nonce(iv, seq), additionalData: header(PROTECTED | kind, id, payload.length), tagLength: 96 };
    const sealed = new Uint8Array(await subtle().encrypt(params as AesGcmParams, key, payload as BufferSource));
    return { kind, id, payload: sealed.subarray(0, payload.length), tag: sealed.subarray(payload.length) };
  }
}

/** Opens the frames of the direction we receive, one after the other: once a record fails,
 * every later one fails too (nothing after a bad record is delivered). */
export class Opener extends Direction {
  private last: Promise<unknown> = Promise.resolve();

  /** The plain frame a protected one carries, with its id unmapped; a `BAD_RECORD`
   * `SecurityError` when it does not verify. */
  open(frame: Frame): Promise<Frame> {
    const keys = this.keys;
    const seq = this.seq++;
    const opened = this.last.then(() => this.openWith(keys, seq, frame));
    this.last = opened;
    opened.catch(ignore);
    return opened;
  }

  private async openWith(keys: Promise<DirectionKeys>, seq: number, frame: Frame): Promise<Frame> {
    const { kind, id, payload, tag } = frame;
    if (tag?.length !== TAG_LEN) throw new SecurityError(BAD_RECORD, 'frame is not protected');
    if (seq >= LIMIT) throw new SecurityError(BAD_RECORD, 'more than 2^32 records under one key');
    const { key, iv, pht } = await keys;
    const params = { name: 'AES-GCM', iv: nonce(iv, seq), additionalData: header(PROTECTED | kind, id, payload.length), tagLength: 96 };
    let plain: ArrayBuffer;
    try {
      plain = await subtle().decrypt(params as AesGcmParams, key, concat(payload, tag) as BufferSource);
    } catch {
      throw new SecurityError(BAD_RECORD, 'record does not verify');
    }
    return { kind, id: pht.unmap(id), payload: new Uint8Array(plain) };
  }
}
