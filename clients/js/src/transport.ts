/**
 * Transports: small adapters that move frame octets, with one interface for the connection
 * engine. A transport knows nothing of frames beyond PROTOCOL.md §1: a byte stream (TCP, TLS)
 * or one frame per binary message (WebSocket, where truflux's `CLOSE` is the WebSocket close).
 *
 * This module holds the interface and the WebSocket adapter, which serves the browser's
 * `WebSocket`, Node's global one (Node ≥ 22) and the `ws` package alike; the Node stream
 * adapters are in `truflux/node`.
 */

import { ABNORMAL, NORMAL, POLICY_VIOLATION, TrufluxError, UNSUPPORTED_DATA } from './code.js';
import { cutReason } from './control.js';

/** What a transport reports to its engine. */
export interface TransportEvents {
  /** One whole frame's octets, from any transport: decode them with `decodeExact`. */
  data(frame: Uint8Array): void;
  /**
   * Once, when nothing more will arrive. A WebSocket reports its close frame's code and
   * reason (1005 when it had no code, 1006 when the connection was lost without one); a
   * stream `ABNORMAL` (1006) at its end, since its `CLOSE` travels as a frame, or the
   * `FrameError`'s code when it could not be cut into frames (the engine still sends its
   * `CLOSE`). `error` is the local failure, if there was one.
   */
  close(code: number, reason: string, error?: unknown): void;
}

/** An open connection to a truflux peer. */
export interface Transport {
  /**
   * `true` for a byte stream (TCP, TLS): `CLOSE` is a frame the engine sends before
   * {@link close}. `false` for WebSocket: {@link close} sends the WebSocket close frame that
   * carries truflux's `CLOSE` (PROTOCOL.md §1).
   */
  readonly stream: boolean;
  /** The WebSocket subprotocol the server selected; `''` for streams. */
  readonly protocol: string;
  /** Octets queued for sending and not yet handed to the network. */
  readonly buffered: number;
  /** Sends one frame's octets (or several frames') as one unit. The transport keeps a view
   * of `bytes` until they are written: do not reuse their memory. */
  send(bytes: Uint8Array): void;
  /** Graceful end of our sending side: a stream flushes what is queued and shuts its write
   * direction; a WebSocket sends its close frame with `code` and `reason`. Data may still
   * arrive until the close event. */
  close(code?: number, reason?: string): void;
  /** Drops the connection now. */
  abort(): void;
  /** Stops (`true`) or restarts reading, where the transport can (Node's sockets): bounds
   * what waits to be processed. */
  pause?(on: boolean): void;
}

/** Opens a transport that reports to `events`, called again for every reconnection;
 * `maxPayload` bounds the frames it accepts; `protocols` are WebSocket subprotocols to offer
 * on this connection only (a plain opening's `truflux.bearer.<token>`; streams ignore them). Rejects with a {@link TrufluxError}
 * (`ABNORMAL`) when the connection cannot be opened (an invalid URL with the WebSocket
 * constructor's own error). */
export type Connector = (events: TransportEvents, maxPayload?: number, protocols?: string[]) => Promise<Transport>;

/** What the adapter needs of a WebSocket: the browser's, Node's global one and `ws` fit. */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly bufferedAmount: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drop without the close handshake. */
  terminate?(): void;
}

export interface WebSocketOptions {
  /** Subprotocols offered after `truflux`, for example `truflux.bearer.<token>`. */
  protocols?: string[];
  /** Makes the socket; by default the global `WebSocket`. */
  create?: (url: string, protocols: string[]) => WebSocketLike;
}

/** The subprotocol every truflux WebSocket offers. */
export const SUBPROTOCOL = 'truflux';

/** The close code sent on the wire for `code`: codes WebSocket forbids there (below 1000,
 * 1004–1006, 1015–2999, 5000 and up) are sent as `POLICY_VIOLATION`, as PROTOCOL.md §1 says. */
export const wireCloseCode = (code: number) => ((code > 999 && code < 1004) || (code > 1006 && code < 1015) || (code > 2999 && code < 5000) ? code : POLICY_VIOLATION);

function closeSocket(ws: WebSocketLike, code = NORMAL, reason = ''): void {
  try {
    ws.close(wireCloseCode(code), cutReason(reason));
  } catch {
    // Browsers send only 1000 and 3000–4999: the close then carries no code (1005 there).
    ws.close();
  }
}

/** A connector for a WebSocket URL (`ws://` or `wss://`). */
export function webSocket(url: string | URL, options: WebSocketOptions = {}): Connector {
  const create = options.create ?? ((u, p) => new WebSocket(u, p) as WebSocketLike);
  return (events, _, extra = []) => openWebSocket(() => create(String(url), [SUBPROTOCOL, ...(options.protocols ?? []), ...extra]), events);
}

/** Wraps the socket `create` makes; resolves once it is open. */
export function openWebSocket(create: () => WebSocketLike, events: TransportEvents): Promise<Transport> {
  return new Promise((resolve, reject) => {
    let open = false;
    let ended = false;
    let failure: any;
    const end = (code: number, reason: string, error?: unknown) => {
      if (!ended) events.close(code, reason, error);
      ended = true;
    };
    const ws = create();
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      open = true;
      resolve({
        stream: false,
        get protocol() {
          return ws.protocol;
        },
        get buffered() {
          return ws.bufferedAmount;
        },
        send: (bytes) => ws.send(bytes),
        close: (code, reason) => closeSocket(ws, code, reason),
        // A browser cannot drop a WebSocket: it closes it, and the connection is over for us.
        abort: () => (ws.close(), end(ABNORMAL, '')),
      });
    };
    ws.onmessage = ({ data }) => {
      // A text message is fatal UNSUPPORTED_DATA (PROTOCOL.md §1).
      if (!(data instanceof ArrayBuffer)) closeSocket(ws, UNSUPPORTED_DATA), end(UNSUPPORTED_DATA, '', new TrufluxError(UNSUPPORTED_DATA));
      else if (!ended) events.data(new Uint8Array(data));
    };
    // An error is always followed by a close event; keep what it says (ws says why, browsers
    // do not) for that report.
    ws.onerror = (event) => (failure = event.error ?? event);
    ws.onclose = (event) => (open ? end(event.code, event.reason, failure) : reject(new TrufluxError(ABNORMAL, failure?.message)));
  });
}
