// The security building blocks on WebCrypto: known-answer vectors (FIPS 180-4, RFC 4231,
// RFC 5869, RFC 5903, RFC 6979), the record vectors of PROTOCOL.md §9.6 byte for byte, the PHT
// id mapping of §9.4, and records that fail when anything about them changes.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createECDH, createHmac, generateKeyPairSync, hkdfSync, sign, webcrypto } from 'node:crypto';
import { Code, decodeExact, encodeFrame, Kind, MAX_ID } from 'truflux';
import {
  directionKeys,
  ecdhShared,
  expandLabel,
  generateEcdh,
  hkdfExpand,
  hkdfExtract,
  hmac,
  LABEL_PREFIX,
  nextSecret,
  Opener,
  Pht,
  Sealer,
  SecurityError,
  sha256,
  verifyEcdsa,
  verifyHmac,
} from 'truflux/security';
import { protocol } from './support/files.js';
import { RECORD_SECRET, recordFrame } from './support/frames.js';
import { generator, seeded } from './support/random.js';
import { section, specLabelPrefix, vectors } from './support/spec.js';

const spec = protocol();
/** The document's prose with every run of white space as one space. */
const prose = spec.replace(/\s+/g, ' ');
/** The label prefix the document's key schedule uses ("truflux v2 " since version 2). */
const PREFIX = specLabelPrefix(spec);

const fromHex = (text) => Uint8Array.from(Buffer.from(text.replace(/\s+/g, ''), 'hex'));
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const text = (s) => new TextEncoder().encode(s);
const refused = (code) => (e) => e instanceof SecurityError && e.code === code;

// ---- known answers ------------------------------------------------------------------------

test('SHA-256: FIPS 180-4 "abc"', async () => {
  assert.equal(hex(await sha256(text('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('HMAC-SHA-256: RFC 4231 case 2, verified in constant time', async () => {
  const key = text('Jefe');
  const data = text('what do ya want for nothing?');
  const mac = await hmac(key, data);
  assert.equal(hex(mac), '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  assert.equal(await verifyHmac(key, mac, data), true);
  mac[31] ^= 1;
  assert.equal(await verifyHmac(key, mac, data), false);
  assert.equal(await verifyHmac(key, mac.subarray(0, 31), data), false);
  // An empty key is a valid HMAC key (WebCrypto alone refuses it).
  assert.equal(hex(await hmac(new Uint8Array(0), data)), createHmac('sha256', Buffer.alloc(0)).update(data).digest('hex'));
});

test('HKDF-SHA-256: RFC 5869 case 1, and against node:crypto for other inputs', async () => {
  const ikm = new Uint8Array(22).fill(0x0b);
  const prk = await hkdfExtract(fromHex('000102030405060708090a0b0c'), ikm);
  assert.equal(hex(prk), '077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5');
  const okm = await hkdfExpand(prk, fromHex('f0f1f2f3f4f5f6f7f8f9'), 42);
  assert.equal(hex(okm), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  const random = generator();
  for (const [saltLength, length] of [[0, 42], [32, 32], [13, 1], [64, 255 * 32], [7, 100]]) {
    const salt = random.bytes(saltLength);
    const info = random.bytes(random.int(40));
    const key = random.bytes(1 + random.int(80));
    const expected = Buffer.from(hkdfSync('sha256', key, salt, info, length));
    assert.equal(hex(await hkdfExpand(await hkdfExtract(salt, key), info, length)), hex(expected), seeded(`salt ${saltLength}, ${length} octets`));
  }
  await assert.rejects(hkdfExpand(prk, new Uint8Array(0), 255 * 32 + 1), RangeError);
});

test('the label prefix is "truflux v2 " and expand(s, l, n) prefixes every label with it', async () => {
  assert.equal(LABEL_PREFIX, 'truflux v2 ');
  const s = new Uint8Array(32).fill(9);
  assert.equal(hex(await expandLabel(s, 'key', 16)), hex(await hkdfExpand(s, text('truflux v2 key'), 16)));
  assert.equal(hex(await expandLabel(s, 'key', 16, 'truflux v1 ')), hex(await hkdfExpand(s, text('truflux v1 key'), 16)));
});

// ---- ECDH and ECDSA -----------------------------------------------------------------------

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

/** A WebCrypto private key for a raw P-256 scalar (its public point from node:crypto). */
async function privateKey(d, name, usages) {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const jwk = { kty: 'EC', crv: 'P-256', d: b64url(d), x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) };
  return { key: await webcrypto.subtle.importKey('jwk', jwk, { name, namedCurve: 'P-256' }, false, usages), point: new Uint8Array(point) };
}

test('ECDH P-256: RFC 5903 §8.1, and fresh pairs agree', async () => {
  const { key } = await privateKey(fromHex('C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433'), 'ECDH', ['deriveBits']);
  const gr = fromHex(`04 D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63
    56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB`);
  assert.equal(hex(await ecdhShared(key, gr)), 'd6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de');
  const a = await generateEcdh();
  const b = await generateEcdh();
  assert.equal(a.publicKey.length, 65);
  assert.equal(a.publicKey[0], 4);
  assert.equal(hex(await ecdhShared(a.privateKey, b.publicKey)), hex(await ecdhShared(b.privateKey, a.publicKey)));
});

test('ECDH refuses every public value but a 65-octet uncompressed point on P-256', async () => {
  const { privateKey: mine, publicKey } = await generateEcdh();
  const offCurve = publicKey.slice();
  offCurve[64] ^= 1;
  const compressed = Uint8Array.of(2 + (publicKey[64] & 1), ...publicKey.subarray(1, 33));
  const wrongPrefix = Uint8Array.of(5, ...publicKey.subarray(1));
  const zero = Uint8Array.of(4, ...new Uint8Array(64));
  for (const [what, value] of [['off the curve', offCurve], ['compressed', compressed], ['prefix 05', wrongPrefix], ['(0, 0)', zero], ['infinity', Uint8Array.of(0)], ['64 octets', publicKey.subarray(1)], ['empty', new Uint8Array(0)], ['66 octets', Uint8Array.of(...publicKey, 0)]]) {
    await assert.rejects(ecdhShared(mine, value), refused(Code.HANDSHAKE_FAILED), what);
  }
});

test('ECDSA P-256 / SHA-256: RFC 6979 A.2.5 and node:crypto signatures verify; changed ones do not', async () => {
  const { point } = await privateKey(fromHex('C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721'), 'ECDSA', ['sign']);
  assert.equal(hex(point), '04' + '60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6' + '7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299');
  const signature = fromHex(`EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716
    F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8`);
  assert.equal(await verifyEcdsa(point, signature, text('sample')), true);
  assert.equal(await verifyEcdsa(point, signature, text('samplf')), false);
  const { publicKey, privateKey: signer } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const jwk = publicKey.export({ format: 'jwk' });
  const raw = new Uint8Array(Buffer.concat([Buffer.of(4), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]));
  const random = generator();
  for (let i = 0; i < 20; i++) {
    const data = random.bytes(random.int(200));
    const sig = new Uint8Array(sign('sha256', data, { key: signer, dsaEncoding: 'ieee-p1363' }));
    assert.equal(await verifyEcdsa(raw, sig, data), true, seeded('node:crypto signature'));
    sig[random.int(64)] ^= 1 << random.int(8);
    assert.equal(await verifyEcdsa(raw, sig, data), false, seeded('changed signature'));
  }
  assert.equal(await verifyEcdsa(point, signature.subarray(0, 63), text('sample')), false);
  assert.equal(await verifyEcdsa(point, Uint8Array.of(...signature, 0), text('sample')), false);
  await assert.rejects(verifyEcdsa(point.subarray(1), signature, text('sample')), refused(Code.HANDSHAKE_FAILED));
  const off = point.slice();
  off[64] ^= 1;
  await assert.rejects(verifyEcdsa(off, signature, text('sample')), refused(Code.HANDSHAKE_FAILED));
});

// ---- the PHT id mapping (§9.4) --------------------------------------------------------------

test('PHT: the all-zero key maps 7 as PROTOCOL.md says', () => {
  const mapped = new Pht(new Uint8Array(16)).map(7);
  assert.equal(mapped, 0x4013600c);
  assert.ok(prose.includes(`maps id 7 to 0x${mapped.toString(16).padStart(8, '0')}`));
});

test('PHT: map and unmap are inverse bijections of the 31-bit ids', () => {
  const random = generator();
  for (let k = 0; k < 20; k++) {
    const pht = new Pht(random.bytes(16));
    for (const id of [0, 1, MAX_ID, MAX_ID - 1, 0x4000_0000, 0x7fff, 0x8000]) {
      assert.equal(pht.unmap(pht.map(id)), id);
      assert.equal(pht.map(pht.unmap(id)), id);
    }
    for (let i = 0; i < 20000; i++) {
      const id = random.int(2 ** 31);
      const wire = pht.map(id);
      assert.ok(wire >= 0 && wire <= MAX_ID, seeded('31 bits'));
      assert.equal(pht.unmap(wire), id, seeded(`key ${k}, id ${id}`));
      assert.equal(pht.map(pht.unmap(id)), id, seeded('unmap then map'));
    }
    // Distinct ids of a consecutive block map to distinct wire ids.
    const block = new Set();
    for (let id = 0; id < 1 << 16; id++) block.add(pht.map(id));
    assert.equal(block.size, 1 << 16);
  }
  assert.throws(() => new Pht(new Uint8Array(15)), RangeError);
});

// ---- records (§9.3, §9.6) -----------------------------------------------------------------

const SECRET = RECORD_SECRET;
const hi = recordFrame;

test('the GCM record vectors of PROTOCOL.md §9.6, byte for byte, with the document\'s prefix', async () => {
  const found = vectors(section(spec, 9), 'sealed-vector').filter(([name]) => name.startsWith('gcm-'));
  assert.deepEqual(found.map(([name]) => name), ['gcm-seq0', 'gcm-seq1'], 'PROTOCOL.md §9.6 shows the GCM records of seq 0 and 1');
  const sealer = new Sealer(SECRET, PREFIX);
  const opener = new Opener(SECRET, PREFIX);
  for (const [name, octets] of found) {
    const sealed = await sealer.seal(hi());
    assert.equal(hex(encodeFrame(sealed)), hex(octets), name);
    const opened = await opener.open(decodeExact(octets));
    assert.deepEqual([opened.kind, opened.id, hex(opened.payload), opened.tag], [Kind.MESSAGE, 7, hex(text('hi')), undefined]);
  }
  const { pht } = await directionKeys(SECRET, PREFIX);
  assert.ok(prose.includes(`maps to 0x${pht.map(7).toString(16).padStart(8, '0')} under this secret`), 'PROTOCOL.md names the mapped id');
});

/** HKDF-Expand with node:crypto's HMAC: a second reading of §9.2's `expand`. */
function expandNode(secret, label, n, prefix) {
  let block = Buffer.alloc(0);
  const out = [];
  for (let i = 1; out.length * 32 < n; i++) {
    block = createHmac('sha256', secret).update(Buffer.concat([block, Buffer.from(prefix + label), Buffer.of(i)])).digest();
    out.push(block);
  }
  return Buffer.concat(out).subarray(0, n);
}

test('records are sealed exactly as §9.3 says (checked with node:crypto)', async () => {
  const random = generator();
  for (const prefix of ['truflux v1 ', 'truflux v2 ']) {
    const secret = random.bytes(32);
    const key = expandNode(secret, 'key', 16, prefix);
    const iv = expandNode(secret, 'iv', 12, prefix);
    const pht = new Pht(expandNode(secret, 'pht', 16, prefix));
    const sealer = new Sealer(secret, prefix);
    for (let seq = 0; seq < 5; seq++) {
      const frame = { kind: random.pick(Object.values(Kind)), id: random.int(2 ** 31), payload: random.bytes(random.int(100)) };
      const sealed = await sealer.seal(frame);
      const nonce = Buffer.from(iv);
      nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8);
      const aad = Buffer.alloc(9);
      aad[0] = 0x80 | frame.kind;
      aad.writeUInt32BE(pht.map(frame.id), 1);
      aad.writeUInt32BE(frame.payload.length, 5);
      const cipher = createCipheriv('aes-128-gcm', key, nonce, { authTagLength: 12 }).setAAD(aad);
      const ciphertext = Buffer.concat([cipher.update(frame.payload), cipher.final()]);
      const expected = Buffer.concat([aad, cipher.getAuthTag(), ciphertext]);
      assert.equal(hex(encodeFrame(sealed)), hex(expected), seeded(`${prefix}record ${seq}`));
    }
  }
});

test('records open in order; a replayed, reordered or changed record fails, and so does every later one', async () => {
  const sealer = new Sealer(SECRET);
  const records = [];
  for (let i = 0; i < 3; i++) records.push(encodeFrame(await sealer.seal({ kind: Kind.MESSAGE, id: i, payload: text(`record ${i}`) })));
  // In order: all open.
  const inOrder = new Opener(SECRET);
  for (const [i, r] of records.entries()) assert.equal((await inOrder.open(decodeExact(r))).id, i);
  // Replayed.
  const replay = new Opener(SECRET);
  await replay.open(decodeExact(records[0]));
  await assert.rejects(replay.open(decodeExact(records[0])), refused(Code.BAD_RECORD));
  await assert.rejects(replay.open(decodeExact(records[1])), refused(Code.BAD_RECORD), 'nothing after a bad record');
  // Reordered, or after a dropped record.
  await assert.rejects(new Opener(SECRET).open(decodeExact(records[1])), refused(Code.BAD_RECORD));
  // Every octet changed, one at a time: header, tag and ciphertext are all authenticated.
  for (let at = 0; at < records[0].length; at++) {
    if (at >= 5 && at < 9) continue; // a changed length field no longer frames the message
    const changed = records[0].slice();
    changed[at] ^= 0x40;
    let frame;
    try {
      frame = decodeExact(changed);
    } catch {
      continue; // no longer a frame at all (an unknown kind, a set id bit)
    }
    await assert.rejects(new Opener(SECRET).open(frame), refused(Code.BAD_RECORD), `octet ${at}`);
  }
  // A plain frame, or a cut tag, is not a record.
  await assert.rejects(new Opener(SECRET).open({ kind: Kind.MESSAGE, id: 1, payload: text('plain') }), refused(Code.BAD_RECORD));
  await assert.rejects(new Opener(SECRET).open({ ...decodeExact(records[0]), tag: new Uint8Array(11) }), refused(Code.BAD_RECORD));
  // Another secret.
  await assert.rejects(new Opener(new Uint8Array(32)).open(decodeExact(records[0])), refused(Code.BAD_RECORD));
});

test('calls made in record order keep their order, whenever they finish', async () => {
  const sealer = new Sealer(SECRET);
  const opener = new Opener(SECRET);
  const frames = Array.from({ length: 50 }, (_, i) => ({ kind: Kind.MESSAGE, id: i, payload: new Uint8Array(i * 100).fill(i) }));
  const sealed = await Promise.all(frames.map((f) => sealer.seal(f)));
  const opened = await Promise.all(sealed.map((f) => opener.open(f)));
  assert.deepEqual(opened.map((f) => [f.id, f.payload.length]), frames.map((f) => [f.id, f.payload.length]));
  assert.equal(sealer.sequence, 50);
  assert.equal(opener.sequence, 50);
});

test('rekey: both sides move to expand(s, "next", 32) from sequence 0', async () => {
  const sealer = new Sealer(SECRET);
  const opener = new Opener(SECRET);
  const first = await sealer.seal(hi());
  await opener.open(first);
  sealer.rekey();
  assert.equal(sealer.sequence, 0);
  const afterRekey = await sealer.seal(hi());
  assert.notEqual(hex(afterRekey.tag), hex(first.tag));
  // Sealed with the next secret from sequence 0, exactly.
  const next = await nextSecret(SECRET);
  assert.equal(hex(encodeFrame(afterRekey)), hex(encodeFrame(await new Sealer(next).seal(hi()))));
  // An opener that has not followed fails; one that has opens.
  const behind = new Opener(SECRET);
  await behind.open(first);
  await assert.rejects(behind.open(afterRekey), refused(Code.BAD_RECORD));
  opener.rekey();
  assert.equal((await opener.open(afterRekey)).id, 7);
  // Twice.
  sealer.rekey();
  opener.rekey();
  assert.equal((await opener.open(await sealer.seal(hi()))).id, 7);
});

test('every kind and payload size seals and opens back', async () => {
  const random = generator();
  const sealer = new Sealer(SECRET);
  const opener = new Opener(SECRET);
  for (const kind of Object.values(Kind)) {
    for (const size of [0, 1, 15, 16, 17, 1000, 70000]) {
      const frame = { kind, id: random.int(2 ** 31), payload: random.bytes(size) };
      const sealed = await sealer.seal(frame);
      assert.equal(sealed.payload.length, size, 'the ciphertext is as long as the payload');
      assert.equal(sealed.tag.length, 12);
      const wire = encodeFrame(sealed);
      assert.equal(wire[0], 0x80 | kind);
      const opened = await opener.open(decodeExact(wire));
      assert.deepEqual([opened.kind, opened.id, hex(opened.payload)], [kind, frame.id, hex(frame.payload)], seeded(`kind ${kind}, ${size} octets`));
    }
  }
  await assert.rejects(sealer.seal({ kind: Kind.MESSAGE, id: MAX_ID + 1, payload: new Uint8Array(0) }), SecurityError);
});
