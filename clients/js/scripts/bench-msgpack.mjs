// Encode and decode times of truflux's MessagePack against @msgpack/msgpack and, when it is
// installed (npm install --no-save notepack.io), notepack.io, for three kinds of value. A
// measurement, not a test: numbers vary with the machine.

import * as ours from '../dist/msgpack.js';

const values = [
  ['chat message', { text: 'hello there, how are you?', from: 'alice', room: 'general', at: 1700000000123, tags: ['a', 'b'] }, 200000],
  ['200 small objects', { items: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}`, price: i * 1.25, ok: i % 2 === 0 })) }, 2000],
  ['64 KiB of bin', { data: new Uint8Array(64 * 1024) }, 20000],
];

async function libraries() {
  const list = [['truflux', ours.encode, ours.decode]];
  const oracle = await import('@msgpack/msgpack');
  const encoder = new oracle.Encoder();
  const decoder = new oracle.Decoder();
  list.push(['@msgpack/msgpack', (x) => encoder.encode(x), (b) => decoder.decode(b)]);
  try {
    const notepack = (await import('notepack.io')).default;
    list.push(['notepack.io', notepack.encode, notepack.decode]);
  } catch {
    console.log('(notepack.io is not installed: not measured)');
  }
  return list;
}

/** Mean microseconds per call of `fn`, after a warm-up. */
function time(fn, n) {
  for (let i = 0; i < n / 10; i++) fn();
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - start) / n / 1000;
}

const list = await libraries();
console.log(`${'value'.padEnd(20)} ${'library'.padEnd(18)} ${'encode µs'.padStart(10)} ${'decode µs'.padStart(10)}`);
for (const [label, value, n] of values) {
  for (const [name, encode, decode] of list) {
    const wire = encode(value);
    console.log(`${label.padEnd(20)} ${name.padEnd(18)} ${time(() => encode(value), n).toFixed(2).padStart(10)} ${time(() => decode(wire), n).toFixed(2).padStart(10)}`);
  }
}
