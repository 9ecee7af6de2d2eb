// The incremental SHA-256 of truflux/files against FIPS 180-4's examples, node:crypto and
// WebCrypto's one-shot digest, fed in pieces of every size.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, webcrypto } from 'node:crypto';
import { Sha256, sha256Sync } from 'truflux/files';
import { generator, seeded } from './support/random.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const text = (s) => new TextEncoder().encode(s);

test('FIPS 180-4 examples: "abc", the 448-bit message, one million "a"', () => {
  assert.equal(hex(sha256Sync(text('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(hex(sha256Sync(text('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  assert.equal(hex(sha256Sync(new Uint8Array(0))), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  // One million "a", fed in pieces of 1 to 1000 octets.
  const random = generator();
  const hash = new Sha256();
  const a = new Uint8Array(1000).fill(0x61);
  for (let left = 1_000_000; left > 0; ) {
    const n = Math.min(left, 1 + random.int(1000));
    hash.update(a.subarray(0, n));
    left -= n;
  }
  assert.equal(hex(hash.digest()), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0', seeded('one million "a"'));
});

test('every length around the block and padding boundaries matches node:crypto', () => {
  const random = generator();
  const data = random.bytes(300);
  for (let n = 0; n <= 300; n++) {
    assert.equal(hex(sha256Sync(data.subarray(0, n))), createHash('sha256').update(data.subarray(0, n)).digest('hex'), `${n} octets`);
  }
});

test('random data in random pieces matches node:crypto and WebCrypto', async () => {
  const random = generator();
  for (let round = 0; round < 30; round++) {
    const data = random.bytes(random.int(200_000));
    const hash = new Sha256();
    for (let at = 0; at < data.length; ) {
      const n = random.pick([0, 1, 63, 64, 65, random.int(5000)]);
      hash.update(data.subarray(at, at + n));
      at += n;
    }
    const digest = hex(hash.digest());
    assert.equal(digest, createHash('sha256').update(data).digest('hex'), seeded(`round ${round}`));
    assert.equal(digest, hex(new Uint8Array(await webcrypto.subtle.digest('SHA-256', data))), seeded(`round ${round}`));
  }
});

test('a finished hash takes no more data', () => {
  const hash = new Sha256().update(text('x'));
  hash.digest();
  assert.throws(() => hash.update(text('y')));
});
