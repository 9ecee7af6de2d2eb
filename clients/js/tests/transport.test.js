// The transport adapters against real sockets on 127.0.0.1: TCP and TLS (node:net, node:tls)
// and WebSocket through the ws package, each handing its engine whole frames and reporting
// how the connection ended.

import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { WebSocket as WsSocket, WebSocketServer } from 'ws';
import { Code, decodeExact, encodeClose, encodeFrame, header, Kind, TrufluxError, webSocket, wireCloseCode } from 'truflux';
import { nodeWebSocket, tcp, tls } from 'truflux/node';
import { certificateRefused, connectError } from '../dist/node/stream.js';

const text = (s) => new TextEncoder().encode(s);
const message = (id, body) => encodeFrame({ kind: Kind.MESSAGE, id, payload: text(body) });

/** Events that queue what arrives, with promises for the next frame and for the close. */
function recorder() {
  const frames = queue();
  let closed;
  const closing = new Promise((resolve) => (closed = resolve));
  return {
    events: { data: frames.put, close: (code, reason, error) => closed({ code, reason, error }) },
    frame: frames.next,
    closed: closing,
  };
}

/** Items in arrival order, with a promise for the next one. */
function queue() {
  const items = [];
  const waiting = [];
  return {
    put(item) {
      const waiter = waiting.shift();
      if (waiter) waiter(item);
      else items.push(item);
    },
    next: () => (items.length ? Promise.resolve(items.shift()) : new Promise((resolve) => waiting.push(resolve))),
  };
}

/** A TCP (or TLS) server on 127.0.0.1 that hands each connection to `serve`. */
async function listen(serve, make = createServer, options) {
  const server = options ? make(options, serve) : make(serve);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: server.address().port };
}

/** Octets one side of a stream receives, with a promise for `n` of them. */
function reader(socket) {
  let got = Buffer.alloc(0);
  let want;
  socket.on('data', (chunk) => {
    got = Buffer.concat([got, chunk]);
    if (want && got.length >= want.n) want.resolve(got.subarray(0, want.n));
  });
  return (n) => (got.length >= n ? Promise.resolve(got.subarray(0, n)) : new Promise((resolve) => (want = { n, resolve })));
}

test('TCP: frames split anywhere by the network arrive whole, one per data event', async (t) => {
  const frames = [message(1, 'one'), message(2, 'x'.repeat(5000)), encodeFrame({ kind: Kind.PING, id: 0, payload: new Uint8Array(0) })];
  const wire = Buffer.concat(frames);
  const { server, port } = await listen((socket) => {
    // Octet by octet for the first frame, then the rest in two pieces.
    for (const octet of wire.subarray(0, frames[0].length)) socket.write(Uint8Array.of(octet));
    socket.write(wire.subarray(frames[0].length, 3000));
    socket.end(wire.subarray(3000));
  });
  t.after(() => server.close());
  const r = recorder();
  const transport = await tcp({ host: '127.0.0.1', port })(r.events);
  assert.equal(transport.stream, true);
  assert.equal(transport.protocol, '');
  for (const expected of frames) assert.deepEqual(await r.frame(), new Uint8Array(expected));
  const end = await r.closed;
  assert.equal(end.code, Code.ABNORMAL, 'a stream reports its end; its CLOSE travels as a frame');
  assert.equal(end.error, undefined);
});

test('TCP: what we send arrives; close() shuts our side after it, abort() drops at once', async (t) => {
  const accepted = queue();
  const { server, port } = await listen((socket) => accepted.put(socket));
  t.after(() => server.close());
  const r = recorder();
  const transport = await tcp({ host: '127.0.0.1', port })(r.events);
  const peer = await accepted.next();
  const read = reader(peer);
  const ended = once(peer, 'end');
  const payload = Buffer.concat([message(7, 'hi'), encodeFrame({ kind: Kind.CLOSE, id: 0, payload: encodeClose(Code.NORMAL, 'bye') })]);
  transport.send(payload);
  transport.close();
  assert.deepEqual(await read(payload.length), payload);
  await ended;
  // The peer answers and ends too: our side reports the end.
  peer.end();
  assert.equal((await r.closed).code, Code.ABNORMAL);

  const r2 = recorder();
  const second = await tcp({ host: '127.0.0.1', port })(r2.events);
  const other = await accepted.next();
  const peerClosed = once(other, 'close');
  second.abort();
  await peerClosed;
  await r2.closed;
});

test('TCP: a bad header, an oversized length and a cut frame end what we read, with their codes', async (t) => {
  const scripts = [
    [Uint8Array.of(...message(1, 'ok'), 0x14, 0, 0, 0, 0, 0, 0, 0, 0), Code.PROTOCOL_ERROR, 1],
    [header(Kind.MESSAGE, 1, 101), Code.MESSAGE_TOO_BIG, 0],
    [message(1, 'cut short').subarray(0, 12), Code.PROTOCOL_ERROR, 0],
  ];
  for (const [octets, code, before] of scripts) {
    const { server, port } = await listen((socket) => socket.end(octets));
    const r = recorder();
    const transport = await tcp({ host: '127.0.0.1', port })(r.events, 100);
    for (let i = 0; i < before; i++) await r.frame();
    const end = await r.closed;
    assert.equal(end.code, code);
    assert.equal(end.error.code, code);
    transport.abort();
    server.close();
  }
  t.diagnostic('each stream error reported once, with the FrameError');
});

test('TCP: a refused connection rejects with ABNORMAL', async () => {
  const { server, port } = await listen(() => {});
  server.close();
  await once(server, 'close');
  await assert.rejects(tcp({ host: '127.0.0.1', port })(recorder().events), (e) => e instanceof TrufluxError && e.code === Code.ABNORMAL);
});

/** A self-signed certificate for 127.0.0.1, made with openssl; undefined without openssl. */
function certificate() {
  const dir = mkdtempSync(join(tmpdir(), 'truflux-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A self-signed certificate for 127.0.0.1 that expired in 2020 (openssl ca sets the dates). */
function expiredCertificate() {
  const dir = mkdtempSync(join(tmpdir(), 'truflux-tls-'));
  const at = (f) => join(dir, f);
  try {
    writeFileSync(at('ca.cnf'), `[ca]\ndefault_ca = d\n[d]\ndatabase = ${at('index.txt')}\nnew_certs_dir = ${dir}\nserial = ${at('serial')}\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n`);
    writeFileSync(at('index.txt'), '');
    writeFileSync(at('serial'), '01\n');
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', at('key.pem'), '-out', at('csr.pem')], { stdio: 'ignore' });
    execFileSync('openssl', ['ca', '-batch', '-selfsign', '-config', at('ca.cnf'), '-keyfile', at('key.pem'), '-in', at('csr.pem'), '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-out', at('cert.pem')], { stdio: 'ignore' });
    return { key: readFileSync(at('key.pem')), cert: readFileSync(at('cert.pem')) };
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('TLS: which errors are a refused certificate', () => {
  for (const code of ['CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_NOT_YET_VALID', 'HOSTNAME_MISMATCH']) {
    assert.equal(certificateRefused({ code }), true, code);
    assert.equal(connectError({ code, message: 'm' }).code, Code.UNTRUSTED_SERVER, code);
  }
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', undefined]) {
    assert.equal(certificateRefused({ code }), false, code);
    assert.equal(connectError({ code, message: 'm' }).code, Code.ABNORMAL, code);
  }
  assert.equal(connectError(undefined).code, Code.ABNORMAL);
});

test('TLS: an expired certificate is UNTRUSTED_SERVER, even from a trusted CA', async (t) => {
  const pair = expiredCertificate();
  assert.ok(pair, 'openssl makes the test certificates (scripts/test.sh installs it)');
  const { server, port } = await listen((socket) => socket.end(), createTlsServer, pair);
  t.after(() => server.close());
  await assert.rejects(tls({ host: '127.0.0.1', port, ca: pair.cert })(recorder().events), (e) => e instanceof TrufluxError && e.code === Code.UNTRUSTED_SERVER && /CERT_HAS_EXPIRED/.test(e.message));
});

test('TLS: options pass through to tls.connect; frames arrive whole', async (t) => {
  const pair = certificate();
  assert.ok(pair, 'openssl makes the test certificates (scripts/test.sh installs it)');
  const { server, port } = await listen((socket) => socket.end(Buffer.concat([message(1, 'secure'), message(2, 'x'.repeat(20000))])), createTlsServer, pair);
  t.after(() => server.close());
  const r = recorder();
  const transport = await tls({ host: '127.0.0.1', port, ca: pair.cert })(r.events);
  assert.equal(transport.stream, true);
  assert.equal(Buffer.from(decodeExact(await r.frame()).payload).toString(), 'secure');
  assert.equal(decodeExact(await r.frame()).payload.length, 20000);
  await r.closed;
  // Without the CA the certificate is not trusted, and with another name it does not match:
  // the connection is refused as UNTRUSTED_SERVER (the client then closes, it does not retry).
  await assert.rejects(tls({ host: '127.0.0.1', port })(recorder().events), (e) => e instanceof TrufluxError && e.code === Code.UNTRUSTED_SERVER && /self.signed/i.test(e.message));
  await assert.rejects(tls({ host: '127.0.0.1', port, ca: pair.cert, servername: 'wrong.invalid' })(recorder().events), (e) => e.code === Code.UNTRUSTED_SERVER && /ALTNAME/.test(e.message));
  // A refused connection is still ABNORMAL.
  server.close();
  await assert.rejects(tls({ host: '127.0.0.1', port, ca: pair.cert })(recorder().events), (e) => e.code === Code.ABNORMAL);
});

/** A ws server on 127.0.0.1 that selects `truflux`, and the connections it accepts. */
async function wsServer(t, options = {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (offered) => (offered.has('truflux') ? 'truflux' : false), ...options });
  await once(wss, 'listening');
  t.after(() => {
    // Closing the server waits for its connections: a failed test may have left some open.
    for (const client of wss.clients) client.terminate();
    return new Promise((resolve) => wss.close(resolve));
  });
  const accepted = queue();
  wss.on('connection', (socket, request) => accepted.put({ socket, request }));
  return { url: `ws://127.0.0.1:${wss.address().port}/truflux`, next: accepted.next };
}

test('WebSocket (ws): subprotocols and headers offered, binary frames both ways', async (t) => {
  const server = await wsServer(t);
  const r = recorder();
  const transport = await nodeWebSocket(server.url, { protocols: ['truflux.bearer.secret'], headers: { Authorization: 'Bearer secret' } })(r.events);
  const { socket, request } = await server.next();
  assert.equal(transport.stream, false);
  assert.equal(transport.protocol, 'truflux');
  assert.deepEqual(request.headers['sec-websocket-protocol'].split(/, */), ['truflux', 'truflux.bearer.secret']);
  assert.equal(request.headers.authorization, 'Bearer secret');
  const received = once(socket, 'message');
  transport.send(message(5, 'to the server'));
  const [data, isBinary] = await received;
  assert.equal(isBinary, true);
  assert.deepEqual(new Uint8Array(data), message(5, 'to the server'));
  socket.send(message(6, 'to the client'));
  assert.deepEqual(await r.frame(), message(6, 'to the client'));
  socket.close(4008, 'nope');
  assert.deepEqual(await r.closed, { code: 4008, reason: 'nope', error: undefined });
});

test('WebSocket (ws): our close carries the code, forbidden codes as 1008, the reason cut to 123 octets', async (t) => {
  const server = await wsServer(t);
  for (const [code, wire] of [[Code.PROTOCOL_ERROR, 1002], [Code.RESUME_FAILED, 4010], [1005, 1008], [1006, 1008], [999, 1008], [2000, 1008], [5000, 1008]]) {
    const transport = await nodeWebSocket(server.url)(recorder().events);
    const { socket } = await server.next();
    const closed = once(socket, 'close');
    transport.close(code, 'é'.repeat(100));
    const [got, reason] = await closed;
    assert.equal(got, wire, `code ${code}`);
    assert.equal(wireCloseCode(code), wire);
    assert.ok(reason.length <= 123 && reason.length >= 122, `reason of ${reason.length} octets`);
  }
});

test('WebSocket (ws): a text message is fatal UNSUPPORTED_DATA', async (t) => {
  const server = await wsServer(t);
  const r = recorder();
  await nodeWebSocket(server.url)(r.events);
  const { socket } = await server.next();
  const closed = once(socket, 'close');
  socket.send('text');
  const end = await r.closed;
  assert.equal(end.code, Code.UNSUPPORTED_DATA);
  assert.equal(end.error.code, Code.UNSUPPORTED_DATA);
  assert.equal((await closed)[0], Code.UNSUPPORTED_DATA);
});

test('WebSocket (ws): a message longer than the largest frame is refused before it is buffered', async (t) => {
  const server = await wsServer(t);
  const r = recorder();
  await nodeWebSocket(server.url)(r.events, 100);
  const { socket } = await server.next();
  socket.send(new Uint8Array(100 + 37));
  socket.send(new Uint8Array(100 + 38));
  assert.equal((await r.frame()).length, 137);
  assert.equal((await r.closed).code, Code.MESSAGE_TOO_BIG);
});

test('WebSocket (ws): a refused upgrade rejects with ABNORMAL and what the server said', async (t) => {
  const server = await wsServer(t, { verifyClient: (_info, done) => done(false, 401, 'Unauthorized') });
  await assert.rejects(nodeWebSocket(server.url)(recorder().events), (e) => e instanceof TrufluxError && e.code === Code.ABNORMAL && /401/.test(e.message));
});

test('WebSocket: Node\'s global WebSocket serves when no ws-only option is asked for; a lost connection is 1006', async (t) => {
  const server = await wsServer(t);
  let made = 0;
  class Global extends WsSocket {
    constructor(url, protocols) {
      super(url, protocols);
      made++;
    }
  }
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = Global;
  t.after(() => (globalThis.WebSocket = saved));
  const r = recorder();
  await nodeWebSocket(server.url)(r.events);
  assert.equal(made, 1);
  // The browser adapter takes the global WebSocket too.
  const r2 = recorder();
  const browser = await webSocket(server.url)(r2.events);
  assert.equal(made, 2);
  assert.equal(browser.protocol, 'truflux');
  (await server.next()).socket.terminate();
  assert.equal((await r.closed).code, 1006);
  browser.abort();
  assert.equal((await r2.closed).code, 1006);
});
