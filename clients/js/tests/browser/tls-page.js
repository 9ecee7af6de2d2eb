// The page of the Chromium test over wss:// (tests/browser/tls.mjs): served over https, it loads
// the client bundle and talks to the Rust interop server's wss:// listener through the page's
// own WebSocket. Each scenario resolves with what the test checks.

import { connect, security, webSocket } from '/truflux.min.js';

const config = await (await fetch('/config.json')).json();
const once = (client, name, codec) => new Promise((resolve) => client.on(name, (...args) => resolve(args), codec));

window.scenarios = {
  async plain() {
    // Through a relay that cuts the first connection after 12 KB, with a keyed opening so that
    // the session resumes (the server resumes plain sessions only with --plain-resume);
    // messages travel plain inside TLS.
    const c = connect(webSocket(config.relayed), { token: config.token, security: security({ pins: [config.fingerprint] }), reconnect: { initialDelay: 1, maxDelay: 20 } });
    await c.opened;
    const echoed = once(c, 'echo', 'raw');
    c.send('echo', Uint8Array.of(9, 8, 7), 'raw');
    const [echo] = await echoed;
    const sum = await c.request('add', { a: 40, b: 2 });
    c.onRequest('double', (n) => n * 2);
    const answered = once(c, 'answer');
    c.send('ask', { n: 21 });
    const [answer] = await answered;
    const back = once(c, 'reconnected');
    for (let i = 1; i <= 200; i++) c.send('num', { i, pad: new Uint8Array(100) });
    const [, resumed] = await back;
    const stats = await c.request('stats');
    const closed = await c.close();
    return { echo: [...echo], sum, answer, resumed, stats, closed, protocol: location.protocol };
  },

  async secure() {
    const s = security({ pins: [config.fingerprint], required: true });
    const c = connect(webSocket(config.wss), { token: config.token, security: s });
    // The server's is_secure() flips once its SEC_ON is written, which the client sees as
    // peerSecure: ask for its state after that.
    const serverSecure = new Promise((resolve) => c.on('peerSecure', (on) => on && resolve()));
    await c.opened;
    if (!s.isPeerSecure) await serverSecure;
    const state = await c.request('state');
    const sum = await c.request('add', { a: 1, b: 2 });
    await c.close();
    return { authenticated: s.serverAuthenticated, state, sum };
  },

  async refused() {
    // A wss:// server whose certificate the browser does not trust: the socket fails, and a
    // page is not told why (no code, no reason). The first connection is not retried.
    const c = connect(webSocket(config.untrusted), { token: config.token });
    const [code] = await once(c, 'closed');
    return { code, state: c.state };
  },
};
