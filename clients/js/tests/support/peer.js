// A truflux server written by hand for the tests, over TCP or WebSocket on 127.0.0.1: each
// connection is a script the test writes (read the client's frames, send frames or raw octets,
// run the server side of a keyed opening, stop reading). Built from the codec and the security
// building blocks, which their own tests check against the vectors of PROTOCOL.md.

import { once } from 'node:events';
import { createServer } from 'node:net';
import { webcrypto } from 'node:crypto';
import { WebSocketServer } from 'ws';
import { Code, decodeExact, encodeClose, encodeFrame, encodeHello, Kind, parseClose, parseHello } from 'truflux';
import { frameSplitter } from 'truflux/node';
import { hkdfExpand, hmac, Opener, Sealer, sha256, verifyHmac } from 'truflux/security';

const subtle = webcrypto.subtle;
const text = (s) => new TextEncoder().encode(s);
const concat = (...parts) => Uint8Array.from(Buffer.concat(parts.map((p) => Buffer.from(p))));
const u16 = (n) => Uint8Array.of(n >> 8, n & 255);
const u32 = (n) => Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
const u64 = (n) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return new Uint8Array(b);
};
const lp = (b) => concat(u32(b.length), b);
const label = (l) => text(`truflux v2 ${l}`);

export const frame = (kind, payload = new Uint8Array(0), id = 0) => ({ kind, id, payload });
export const hello = (extensions = [], version = 3) => frame(Kind.HELLO, encodeHello({ version, extensions }));
export const close = (code, reason = '') => frame(Kind.CLOSE, encodeClose(code, reason));
export const security = (id, payload) => frame(Kind.SECURITY, payload, id);
export { u64 };

/** A P-256 signing key for the server, and its fingerprint. */
export async function serverKey() {
  const pair = await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const raw = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, raw, fingerprint: Buffer.from(await sha256(raw)).toString('hex') };
}

/** One connection, from the server's side. */
class Connection {
  constructor(kind, socket) {
    this.kind = kind;
    this.socket = socket;
    this.frames = [];
    this.waiting = [];
    this.ended = undefined;
    this.endWaiting = [];
    /** Octets this side received, for the tests that look at what the client wrote. */
    this.received = 0;
  }

  push(item) {
    this.frames.push(item);
    this.waiting.splice(0).forEach((w) => w());
  }

  end(how) {
    if (this.ended) return;
    this.ended = how;
    this.push({ end: how });
    this.endWaiting.splice(0).forEach((w) => w(how));
  }

  /** The next frame from the client (opened when `opener` is given and it is protected), or
   * `{ end }` once the client's side ended: `{ code, reason }` of a WebSocket close, or
   * `'end'` / `'error'` on a stream. */
  async next(opener) {
    while (!this.frames.length) await new Promise((r) => this.waiting.push(r));
    const f = this.frames[0].end ? this.frames[0] : this.frames.shift();
    return f.tag && opener ? opener.open(f) : f;
  }

  /** The next frame that is not a `PING`, `PONG` or `ACK` (answering pings). */
  async nextApp(opener, sealer) {
    for (;;) {
      const f = await this.next(opener);
      if (f.kind === Kind.PING) await this.send(frame(Kind.PONG, f.payload), sealer);
      else if (f.kind !== Kind.PONG && f.kind !== Kind.ACK) return f;
    }
  }

  /** Resolves with how the client's side ended. */
  closed() {
    return this.ended ? Promise.resolve(this.ended) : new Promise((r) => this.endWaiting.push(r));
  }

  /** Sends a frame, sealed when `sealer` is given. */
  async send(f, sealer) {
    this.raw(encodeFrame(sealer ? await sealer.seal(f) : f, 1 << 30));
  }

  /** Writes octets as they are (one WebSocket message each). */
  raw(octets) {
    if (this.kind === 'ws') this.socket.send(octets, { binary: true });
    else this.socket.write(octets);
  }

  /** A WebSocket close frame, or the end of the stream. */
  shut(code, reason) {
    if (this.kind === 'ws') this.socket.close(code, reason);
    else this.socket.end();
  }

  drop() {
    if (this.kind === 'ws') this.socket.terminate();
    else this.socket.destroy();
  }

  /** Stops reading what the client writes (it piles up in the client), or reads again. */
  pause(on = true) {
    const s = this.kind === 'ws' ? this.socket._socket : this.socket;
    if (on) s.pause();
    else s.resume();
  }

  /** A plain opening: reads the client's hello and answers with `extensions` (a hello), or
   * with `reply` instead. Resolves with the client's hello's extensions by type. */
  async plainOpening({ extensions = [], reply } = {}) {
    const f = await this.next();
    if (f.kind !== Kind.HELLO) throw new Error(`expected a hello, got ${JSON.stringify(f)}`);
    const got = Object.fromEntries(parseHello(f.payload).extensions.map((e) => [e.type, e.value]));
    await this.send(reply ?? hello(extensions));
    return got;
  }

  /** The server side of a keyed opening (§4.1, §9.1–§9.2) with `key` (from `serverKey`, or
   * none: anonymous); answers the protected credentials with `extensions`. Resolves with the
   * client's credentials by type, the server's sealer and opener, and `secure` (the client
   * asked for SECURE). */
  async keyedOpening({ key, extensions = [], answer } = {}) {
    const first = await this.next();
    const offer = await this.next();
    const exts = parseHello(first.payload).extensions;
    if (exts.length !== 1 || exts[0].type !== 4 || offer.kind !== Kind.SECURITY || offer.id !== 1) throw new Error('not a keyed opening');
    const serverHello = hello();
    await this.send(serverHello);
    const init = offer.payload;
    const clientPoint = init.subarray(36, 36 + 65);
    const pair = await subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    const point = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
    const peer = await subtle.importKey('raw', clientPoint, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
    const shared = new Uint8Array(await subtle.deriveBits({ name: 'ECDH', public: peer }, pair.privateKey, 256));
    const keyRaw = key ? key.raw : new Uint8Array(0);
    const body = concat(webcrypto.getRandomValues(new Uint8Array(32)), Uint8Array.of(2), u16(65), point, u16(keyRaw.length), keyRaw);
    const t1 = concat(lp(first.payload), lp(serverHello.payload), lp(init), body);
    const th = await sha256(t1);
    const prk = await hmac(new Uint8Array(32), shared);
    const secret = (l) => hkdfExpand(prk, concat(label(l), th), 32);
    const sig = key ? new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key.privateKey, concat(label('server signature'), th))) : new Uint8Array(0);
    const t2 = concat(t1, u16(sig.length), sig);
    const serverFinished = await hmac(await secret('server finished'), await sha256(t2));
    await this.send(security(2, concat(body, u16(sig.length), sig, serverFinished)));
    const th2 = await sha256(concat(t2, serverFinished));
    const finished = await this.next();
    if (!(await verifyHmac(await secret('client finished'), finished.payload, th2))) throw new Error('client finished does not verify');
    const opener = new Opener(await secret('c2s'));
    const sealer = new Sealer(await secret('s2c'));
    const creds = await this.next(opener);
    const got = Object.fromEntries(parseHello(creds.payload).extensions.map((e) => [e.type, e.value]));
    await this.send(answer ?? hello(extensions), sealer);
    return { got, sealer, opener, secure: 5 in got, resumption: await secret('resumption'), th2 };
  }
}

/** A server on 127.0.0.1 (`ws`: WebSocket at /truflux, else TCP) that runs `script(conn)` for
 * each connection. Resolves with its `port`, `connector(connectors)` and `close()`. */
export async function listen(script, { ws = false, maxPayload = 1 << 30 } = {}) {
  const conns = new Set();
  const run = (conn) => {
    conns.add(conn);
    Promise.resolve()
      .then(() => script(conn))
      .catch((e) => {
        conn.failure = e;
      });
  };
  let server;
  let wss;
  if (ws) {
    server = (await import('node:http')).createServer();
    wss = new WebSocketServer({ server, path: '/truflux', maxPayload, handleProtocols: (offered) => (offered.has('truflux') ? 'truflux' : false) });
    wss.on('connection', (socket, request) => {
      const conn = new Connection('ws', socket);
      conn.protocols = request.headers['sec-websocket-protocol'];
      socket.on('message', (data, binary) => {
        conn.received += data.length;
        if (!binary) return conn.push({ text: String(data) });
        try {
          conn.push(decodeExact(new Uint8Array(data), maxPayload));
        } catch (e) {
          conn.push({ bad: e });
        }
      });
      socket.on('close', (code, reason) => conn.end({ code, reason: String(reason) }));
      socket.on('error', () => {});
      run(conn);
    });
  } else {
    server = createServer((socket) => {
      const conn = new Connection('tcp', socket);
      const splitter = frameSplitter(maxPayload);
      socket.on('data', (chunk) => {
        conn.received += chunk.length;
        splitter.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
        try {
          for (let f; (f = splitter.next()); ) conn.push(decodeExact(f, maxPayload));
        } catch (e) {
          conn.push({ bad: e });
        }
      });
      socket.on('end', () => conn.end('end'));
      socket.on('close', () => conn.end('close'));
      socket.on('error', () => conn.end('error'));
      run(conn);
    });
  }
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/truflux`,
    connections: conns,
    close() {
      for (const c of conns) c.drop();
      wss?.close();
      server.close();
    },
  };
}

/** The `CLOSE` frame's code and reason. */
export const closeOf = (f) => (f.kind === Kind.CLOSE ? parseClose(f.payload) : undefined);

export { Code, Kind };
