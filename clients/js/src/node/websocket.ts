/**
 * WebSocket on Node: Node's global `WebSocket` where it exists (Node ≥ 22) and no `ws`-only
 * option is asked for, otherwise the optional `ws` package, loaded only when a connection is
 * made (so nothing needs it until then).
 */

import { ABNORMAL, MESSAGE_TOO_BIG, TrufluxError } from '../code.js';
import { HEADER_LEN, SEAL_OVERHEAD, TAG_LEN } from '../frame.js';
import { openWebSocket, SUBPROTOCOL, type Connector, type WebSocketLike } from '../transport.js';
import { certificateRefused, connectError } from './stream.js';

export interface NodeWebSocketOptions {
  /** Subprotocols offered after `truflux`. */
  protocols?: string[];
  /** Upgrade request headers, for example `{ Authorization: 'Bearer …' }` (needs `ws`). */
  headers?: Record<string, string>;
  /** Options for `ws`'s `WebSocket` (`ca`, `rejectUnauthorized`, `maxPayload`, …), passed
   * through (needs `ws`). Typed loosely so that these types do not need `ws` installed. */
  ws?: { headers?: Record<string, string>; maxPayload?: number; [option: string]: unknown };
}

type WebSocketClass = new (url: string, protocols: string[], options?: object) => WebSocketLike;

async function loadWs(): Promise<WebSocketClass> {
  try {
    const ws = await import('ws');
    return (ws.WebSocket ?? ws.default) as unknown as WebSocketClass;
  } catch (e) {
    throw new TrufluxError(ABNORMAL, `WebSocket on Node < 22 needs the ws package (npm install ws): ${(e as Error).message}`);
  }
}

/** A connector for a `ws://` or `wss://` URL on Node. For `wss://` with a private CA, pass
 * `ws: { ca }` (and `servername` where the host is not the certificate's name); a certificate
 * Node refuses fails the attempt with `UNTRUSTED_SERVER`, which ends the client. */
export function nodeWebSocket(url: string | URL, options: NodeWebSocketOptions = {}): Connector {
  const protocols = [SUBPROTOCOL, ...(options.protocols ?? [])];
  const needsWs = options.headers !== undefined || options.ws !== undefined;
  const global = (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
  return async (events, maxPayload, extra = []) => {
    const Socket = global && !needsWs ? global : await loadWs();
    const init = { ...options.ws, headers: { ...options.ws?.headers, ...options.headers } };
    // ws refuses a longer message from its header, before buffering it (PROTOCOL.md §1).
    if (maxPayload !== undefined) init.maxPayload ??= maxPayload + HEADER_LEN + TAG_LEN + SEAL_OVERHEAD;
    // ws ends such a connection itself, with 1009 to the peer; the engine hears why.
    const close = (code: number, reason: string, error?: any) =>
      events.close(error?.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? MESSAGE_TOO_BIG : code, reason, error);
    let socket: any;
    let failure: unknown;
    const t = await openWebSocket(() => {
      socket = new Socket(String(url), [...protocols, ...extra], init);
      // ws says why a wss:// connection failed (Node's global WebSocket does not).
      socket.on?.('error', (e: unknown) => (failure = e));
      return socket;
    }, { data: (frame) => events.data(frame), close }).catch((e) => {
      throw certificateRefused(failure) ? connectError(failure) : e;
    });
    // ws drops a connection at once (a browser can only close it), and reads on demand:
    // pausing it bounds what waits to be processed.
    t.abort = () => (socket.terminate ? socket.terminate() : socket.close());
    if (socket.pause) t.pause = (on) => (on ? socket.pause() : socket.resume());
    return t;
  };
}
