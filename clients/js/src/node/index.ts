/** `truflux/node`: the transports that need Node: TCP and TLS with the splitter that cuts
 * their stream into frames, and WebSocket through Node's global `WebSocket` or the `ws` package. */

export { frameSplitter, type FrameSplitter } from '../stream.js';
export { tcp, tls, type TcpOptions, type TlsOptions } from './stream.js';
export { nodeWebSocket, type NodeWebSocketOptions } from './websocket.js';
export { fileSink, fileSource } from './files.js';
