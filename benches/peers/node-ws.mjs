// Node's `ws` as a peer of the benchmark (client and server in Node, perMessageDeflate off),
// with the package from clients/js/node_modules (`cd clients/js && npm ci`).
//
//   node node-ws.mjs serve                      prints "PORT n", echoes until stdin closes
//   node node-ws.mjs roundtrip PORT SIZE COUNT  prints "seconds p50-µs p99-µs"
//   node node-ws.mjs scale PORT SIZE CONNS      CONNS connections × 100 round trips at once;
//                                               prints round trips per second
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../clients/js/package.json', import.meta.url));
const { WebSocket, WebSocketServer } = require('ws');

const [mode, ...rest] = process.argv.slice(2);

function serve() {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 64 << 20 });
  server.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  server.on('listening', () => process.stdout.write(`PORT ${server.address().port}\n`));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

function open(port) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false, maxPayload: 64 << 20 });
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

// A round-trip function for one connection: sends `payload`, resolves on the echo.
function echoer(ws) {
  let pending = null;
  ws.on('message', (data) => {
    const done = pending;
    pending = null;
    done(data);
  });
  return (payload) => new Promise((resolve) => {
    pending = resolve;
    ws.send(payload, { binary: true });
  });
}

async function roundtrip(port, size, count) {
  const ws = await open(port);
  const echo = echoer(ws);
  const payload = Buffer.alloc(size, 0xa5);
  for (let i = 0; i < Math.min(count, 10); i++) await echo(payload);
  const latencies = new Float64Array(count);
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    const back = await echo(payload);
    if (back.length !== size) throw new Error('short echo');
    latencies[i] = Number(process.hrtime.bigint() - t) / 1e3;
  }
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  latencies.sort();
  const pick = (q) => latencies[Math.min(Math.floor(count * q), count - 1)];
  process.stdout.write(`${total} ${pick(0.5)} ${pick(0.99)}\n`);
  ws.terminate();
}

async function scale(port, size, conns) {
  const sockets = [];
  for (let i = 0; i < conns; i++) sockets.push(await open(port));
  const payload = Buffer.alloc(size, 0x5a);
  const start = process.hrtime.bigint();
  await Promise.all(sockets.map(async (ws) => {
    const echo = echoer(ws);
    for (let i = 0; i < 100; i++) await echo(payload);
  }));
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(`${(conns * 100) / secs}\n`);
  for (const ws of sockets) ws.terminate();
}

const [port, size, count] = rest.map(Number);
if (mode === 'serve') serve();
else if (mode === 'roundtrip') await roundtrip(port, size, count);
else if (mode === 'scale') await scale(port, size, count);
else throw new Error(`unknown mode ${mode}`);
