// npm run bench:roundtrip: sequential round trips (send, wait for the echo, again) of the
// JavaScript client in Node against the Rust interop server, over TCP and WebSocket, beside
// Node's `ws` client talking to a `ws` echo server in Node (perMessageDeflate off). Medians of
// 5 interleaved rounds, in seconds, and each one's ratio to ws, as a Markdown table.
//
// The interop server is target/release/examples/interop when it exists, else the debug build
// (cargo build --example interop); the table says which.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { WebSocket, WebSocketServer } from 'ws';
import { connect } from '../dist/index.js';
import { nodeWebSocket, tcp } from '../dist/node/index.js';
import { startServer } from '../tests/support/server.js';

const release = fileURLToPath(new URL('../../../target/release/examples/interop', import.meta.url));
const binary = existsSync(release) ? release : undefined;
const WORKLOADS = [
  [10000, 64, '10000 × 64 B'],
  [5000, 16 << 10, '5000 × 16 KiB'],
  [1000, 128 << 10, '1000 × 128 KiB'],
  [100, 1 << 20, '100 × 1 MiB'],
];
const ROUNDS = 5;

const server = await startServer([], { binary });

/** A truflux client on `connector`: `trip(payload)` resolves with the echo. */
async function truflux(connector) {
  const c = connect(connector, { reconnect: false });
  let waiting;
  c.on('echo', (octets) => waiting(octets), 'raw');
  await c.opened;
  return {
    trip: (payload) => new Promise((resolve) => ((waiting = resolve), c.send('echo', payload, 'raw'))),
    close: () => c.close(),
  };
}

/** The baseline: `ws` to a `ws` echo server in this process. */
const echo = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1 << 30 });
echo.on('connection', (socket) => socket.on('message', (data) => socket.send(data, { binary: true })));
await new Promise((r) => echo.once('listening', r));
async function ws() {
  const socket = new WebSocket(`ws://127.0.0.1:${echo.address().port}`, { perMessageDeflate: false, maxPayload: 1 << 30 });
  await new Promise((r, no) => socket.once('open', r).once('error', no));
  let waiting;
  socket.on('message', (data) => waiting(data));
  return {
    trip: (payload) => new Promise((resolve) => ((waiting = resolve), socket.send(payload))),
    close: () => socket.close(),
  };
}

const contenders = {
  'truflux TCP': () => truflux(tcp({ host: '127.0.0.1', port: server.port })),
  'truflux WebSocket': () => truflux(nodeWebSocket(server.ws)),
  ws: ws,
};

async function measure(make, n, size) {
  const payload = new Uint8Array(randomBytes(size));
  const c = await make();
  // A few trips first, outside the clock.
  for (let i = 0; i < 10; i++) await c.trip(payload);
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const back = await c.trip(payload);
    if (back.length !== size) throw new Error(`echo of ${back.length} octets, sent ${size}`);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await c.close();
  return seconds;
}

const times = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [n, size, label] of WORKLOADS) {
    for (const [name, make] of Object.entries(contenders)) {
      ((times[label] ??= {})[name] ??= []).push(await measure(make, n, size));
    }
  }
  process.stderr.write(`round ${round + 1} of ${ROUNDS}\n`);
}
await server.stop();
echo.close();

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const names = Object.keys(contenders);
const lines = [
  `Round trips, median of ${ROUNDS} interleaved rounds, seconds (ratio to ws); Rust server: ${binary ? 'release' : 'debug'} build; Node ${process.version}.`,
  '',
  `| workload | ${names.join(' | ')} |`,
  `|---|${names.map(() => '---:').join('|')}|`,
];
for (const [, , label] of WORKLOADS) {
  const base = median(times[label].ws);
  const cells = names.map((name) => {
    const m = median(times[label][name]);
    return name === 'ws' ? m.toFixed(3) : `${m.toFixed(3)} (${(m / base).toFixed(2)}×)`;
  });
  lines.push(`| ${label} | ${cells.join(' | ')} |`);
}
console.log(lines.join('\n'));
