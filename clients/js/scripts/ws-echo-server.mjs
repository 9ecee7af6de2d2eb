// The baseline server of npm run bench:roundtrip: a `ws` echo server (perMessageDeflate off)
// in a process of its own, as the Rust server is; prints its port on one line when ready.

import { WebSocketServer } from 'ws';

const echo = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1 << 30 });
echo.on('connection', (socket) => socket.on('message', (data) => socket.send(data, { binary: true })));
echo.once('listening', () => console.log(echo.address().port));
