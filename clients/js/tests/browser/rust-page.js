// The page of the Chromium tests against the Rust interop server (examples/interop.rs): it
// loads the client bundle (bundle/truflux.min.js, as the chat example's page does) and runs
// each scenario on the page's own WebSocket and WebCrypto when the test asks. Each resolves
// with what the test checks.

import { Code, connect, files, security, webSocket } from '/truflux.min.js';

const config = await (await fetch('/config.json')).json();
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
const sha256 = async (data) => hex(await crypto.subtle.digest('SHA-256', data));
/** The first time `client` reports `name` (an event or a message), its arguments. */
const once = (client, name, codec) => new Promise((resolve) => client.on(name, (...args) => resolve(args), codec));
const open = (options = {}) => connect(webSocket(config.ws), { token: config.token, ...options });

/** `n` random octets as a Blob. */
function randomBlob(n) {
  const parts = [];
  for (let at = 0; at < n; at += 65536) parts.push(crypto.getRandomValues(new Uint8Array(Math.min(65536, n - at))));
  return new Blob(parts);
}

let restarting;

window.scenarios = {
  async messages() {
    const a = open();
    const b = open();
    await Promise.all([a.opened, b.opened]);
    const echoed = once(a, 'echo', 'raw');
    a.send('echo', Uint8Array.of(0, 1, 2, 255), 'raw');
    const heard = once(b, 'say');
    a.send('say', { from: 'a', text: 'héllo 😀' });
    const [[echo], [say, ctx]] = await Promise.all([echoed, heard]);
    // A burst the server numbers: in order, each once.
    const got = [];
    const all = new Promise((resolve) => b.on('num', (num) => got.push(num.i) === 200 && resolve()));
    b.send('burst', { n: 200, size: 100 });
    await all;
    await Promise.all([a.close(), b.close()]);
    return { echo: [...echo], say, name: ctx.name, inOrder: got.every((i, k) => i === k + 1) };
  },

  async requests() {
    const c = open();
    c.onRequest('double', (n) => n * 2);
    const sum = await c.request('add', { a: 40, b: 2 });
    const noReply = await c.request('nothing').catch((e) => e.code);
    const timeout = await c.request('sleep', 2000, { timeout: 100 }).catch((e) => e.code);
    const answered = once(c, 'answer');
    c.send('ask', { n: 21 });
    const [answer] = await answered;
    await c.close();
    return { sum, noReply, timeout, answer };
  },

  async secure() {
    const s = security({ pins: [config.fingerprint], required: true });
    const c = open({ security: s });
    const handshaked = once(c, 'handshaked');
    // The server's is_secure() flips once its SEC_ON is written (peerSecure here).
    const serverSecure = new Promise((resolve) => c.on('peerSecure', (on) => on && resolve()));
    await c.opened;
    const [suite] = await handshaked;
    if (!s.isPeerSecure) await serverSecure;
    const state = await c.request('state');
    const sum = await c.request('add', { a: 1, b: 2 });
    const result = { suite, authenticated: s.serverAuthenticated, key: s.serverKey, state, sum, secure: [s.isSecure, s.isPeerSecure] };
    await c.close();
    const wrong = open({ security: security({ pins: ['ab'.repeat(32)] }) });
    const errors = [];
    wrong.on('error', (e) => errors.push(e.code));
    const [code] = await once(wrong, 'closed');
    return { ...result, wrongPin: code, wrongPinErrors: errors, wrongState: wrong.state };
  },

  async files(size) {
    const f = files();
    const c = open({ files: f, security: security({ pins: [config.fingerprint] }) });
    const results = [];
    let resultWaiting;
    c.on('file_result', (r) => (resultWaiting ? (resultWaiting(r), (resultWaiting = undefined)) : results.push(r)));
    const result = () => new Promise((resolve) => (results.length ? resolve(results.shift()) : (resultWaiting = resolve)));
    await c.opened;
    const blob = randomBlob(size);
    const digest = await sha256(await blob.arrayBuffer());

    // Up, paused and resumed by the server.
    const up = f.send(blob, { name: 'browser-up.bin' });
    const events = [];
    for (const e of ['accepted', 'paused', 'resumed']) up.on(e, () => events.push(e));
    let paused = false;
    up.on('progress', (bytes) => {
      if (bytes > size / 3 && !paused) {
        paused = true;
        c.send('file_ctl', { id: up.id, op: 'pause' });
      }
    });
    await once(up, 'paused');
    const atPause = up.bytes;
    c.send('file_ctl', { id: up.id, op: 'resume' });
    await once(up, 'resumed');
    const sentWhilePaused = up.bytes - atPause;
    const upDone = await up.done;
    const upResult = await result();

    // Down, paused and resumed here, into a Blob.
    const offered = once(c, 'file');
    c.send('send_file', { path: `${config.files}/browser-up.bin` });
    const [offer] = await offered;
    offer.accept();
    let gotWhilePaused = -1;
    offer.on('progress', (bytes) => {
      if (bytes > size / 2 && gotWhilePaused < 0) {
        gotWhilePaused = 0;
        offer.pause();
        const at = offer.bytes;
        // Whatever was in flight arrives; the sender sends nothing more until resumed.
        setTimeout(() => {
          gotWhilePaused = offer.bytes - at;
          offer.resume();
        }, 100);
      }
    });
    const downDone = await offer.done;
    const downResult = await result();
    const downDigest = await sha256(await offer.blob().arrayBuffer());
    await c.close();
    return { digest, events, sentWhilePaused, upDone, upResult, offer: { name: offer.name, size: offer.size }, gotWhilePaused, downDone, downResult, downDigest };
  },

  /** The restart scenario, in steps the test runs between stopping and starting the server. */
  async restartConnect() {
    const c = open();
    restarting = { c, disconnected: once(c, 'disconnected'), reconnected: once(c, 'reconnected'), echoed: once(c, 'echo', 'raw') };
    await c.opened;
    return { sum: await c.request('add', { a: 2, b: 3 }), state: c.state };
  },
  async restartWhileDown() {
    const { c } = restarting;
    const [code] = await restarting.disconnected;
    // Queued while the server is down; it goes out once a connection is back.
    c.send('echo', Uint8Array.of(7, 7, 7), 'raw');
    return { code, state: c.state };
  },
  async restartBack() {
    const { c } = restarting;
    const [attempts, resumed] = await restarting.reconnected;
    const [echo] = await restarting.echoed;
    const sum = await c.request('add', { a: 20, b: 22 });
    await c.close();
    return { attempts, resumed, echo: [...echo], sum, code: Code.NORMAL, state: c.state };
  },
};
