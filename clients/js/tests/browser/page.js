// The checks the browser smoke test runs inside Chromium: the codec, MessagePack, the PHT
// mapping, AES-GCM records and SHA-256 on the page's own WebCrypto, and the WebSocket
// transport against the test's server. Bundled by smoke.mjs; reports through window.checks().

import * as oracle from '@msgpack/msgpack';
import { Code, decode, decodeExact, encode, encodeFrame, webSocket } from 'truflux';
import { directionKeys, ecdhShared, generateEcdh, Opener, Pht, Sealer } from 'truflux/security';
import { Sha256 } from 'truflux/files';
import { RECORD_SECRET, recordFrame, specFrames } from '../support/frames.js';
import { section, specLabelPrefix, specVersion, vectors } from '../support/spec.js';

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

function expect(condition, what) {
  if (!condition) throw new Error(what);
}

const checks = {
  async 'frame vectors of PROTOCOL.md §8'(spec) {
    const found = vectors(spec);
    const frames = specFrames(specVersion(spec));
    expect(found.length === frames.length, `${found.length} vectors, ${frames.length} frames`);
    for (const [name, frame] of frames) {
      const [, octets] = found.find(([n]) => n === name);
      expect(hex(encodeFrame(frame)) === hex(octets), `${name} encodes`);
      const back = decodeExact(octets);
      expect(back.kind === frame.kind && back.id === frame.id && hex(back.payload) === hex(frame.payload), `${name} decodes`);
    }
  },

  async 'MessagePack agrees with @msgpack/msgpack'() {
    const values = [0, 127, 128, -33, 65536, 2 ** 32, -(2 ** 31) - 1, 2 ** 53 - 1, 1.5, 'é'.repeat(200), 'x'.repeat(70000), new Uint8Array(300), [1, [2, [3]]], { text: 'yo', n: null, t: true }];
    for (const value of values) {
      expect(hex(encode(value)) === hex(oracle.encode(value)), `octets of ${String(value).slice(0, 20)}`);
      expect(hex(encode(decode(oracle.encode(value)))) === hex(encode(value)), `round trip of ${String(value).slice(0, 20)}`);
    }
    expect(decode(encode(2n ** 64n - 1n)) === 2n ** 64n - 1n, 'u64 as bigint');
    let refused = '';
    try {
      decode(Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xff));
    } catch (e) {
      refused = e.code;
    }
    expect(refused === 'truncated', 'hostile length refused');
  },

  async 'PHT mapping of §9.4'(spec) {
    expect(spec.replace(/\s+/g, ' ').includes(`maps id 7 to 0x${new Pht(new Uint8Array(16)).map(7).toString(16)}`), 'the all-zero key example');
    const pht = new Pht(crypto.getRandomValues(new Uint8Array(16)));
    for (let i = 0; i < 10000; i++) {
      const id = crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
      expect(pht.unmap(pht.map(id)) === id, `round trip of ${id}`);
    }
  },

  async 'AES-GCM record vectors of §9.6'(spec) {
    const prefix = specLabelPrefix(spec);
    const found = vectors(section(spec, 9), 'sealed-vector').filter(([name]) => name.startsWith('gcm-'));
    expect(found.length === 2, 'two GCM vectors');
    const sealer = new Sealer(RECORD_SECRET, prefix);
    const opener = new Opener(RECORD_SECRET, prefix);
    for (const [name, octets] of found) {
      expect(hex(encodeFrame(await sealer.seal(recordFrame()))) === hex(octets), name);
      expect((await opener.open(decodeExact(octets))).id === 7, `${name} opens`);
    }
    const { pht } = await directionKeys(RECORD_SECRET, prefix);
    expect(spec.replace(/\s+/g, ' ').includes(`maps to 0x${pht.map(7).toString(16).padStart(8, '0')} under this secret`), 'mapped id');
    const tampered = decodeExact(found[0][1]);
    tampered.payload[0] ^= 1;
    let code = 0;
    await new Opener(RECORD_SECRET, prefix).open(tampered).catch((e) => (code = e.code));
    expect(code === Code.BAD_RECORD, 'a changed record fails');
  },

  async 'ECDH P-256 on the page\'s WebCrypto'() {
    const a = await generateEcdh();
    const b = await generateEcdh();
    expect(hex(await ecdhShared(a.privateKey, b.publicKey)) === hex(await ecdhShared(b.privateKey, a.publicKey)), 'shared secrets agree');
  },

  async 'incremental SHA-256 against WebCrypto'() {
    const data = new Uint8Array(300000);
    for (let at = 0; at < data.length; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
    const hash = new Sha256();
    for (let at = 0; at < data.length; at += 1000) hash.update(data.subarray(at, at + 1000));
    expect(hex(hash.digest()) === hex(new Uint8Array(await crypto.subtle.digest('SHA-256', data))), 'digests agree');
  },

  async 'WebSocket transport against the test server'() {
    const url = `ws://${location.host}/truflux`;
    const frames = [];
    let closed;
    const done = new Promise((resolve) => (closed = resolve));
    let arrived;
    const next = () => new Promise((resolve) => (arrived = resolve));
    const events = {
      data(frame) {
        frames.push(frame);
        arrived?.();
      },
      close: (code, reason) => closed({ code, reason }),
    };
    let waiting = next();
    const transport = await webSocket(url)(events);
    expect(transport.protocol === 'truflux', `subprotocol ${transport.protocol}`);
    const frame = encodeFrame({ kind: 0x10, id: 5, payload: encode({ text: 'echo' }) });
    transport.send(frame);
    await waiting;
    expect(hex(frames[0]) === hex(frame), 'the echo is the frame');
    // Id 99 asks the server for a text message: fatal UNSUPPORTED_DATA.
    transport.send(encodeFrame({ kind: 0x10, id: 99, payload: new Uint8Array(0) }));
    const end = await done;
    expect(end.code === Code.UNSUPPORTED_DATA, `closed with ${end.code}`);
  },
};

window.checks = async () => {
  const spec = await (await fetch('/PROTOCOL.md')).text();
  const results = [];
  for (const [name, check] of Object.entries(checks)) {
    try {
      await check(spec);
      results.push({ name, ok: true });
    } catch (e) {
      results.push({ name, ok: false, error: String(e?.stack ?? e) });
    }
  }
  return results;
};
