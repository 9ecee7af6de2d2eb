/**
 * The stream transports: TCP (`node:net`) and TLS (`node:tls`). The adapter cuts the stream
 * into frames (PROTOCOL.md §1), so its engine gets whole frames as from a WebSocket; truflux's
 * `CLOSE` is a frame the engine sends before `close()`.
 */

import { connect as netConnect, type Socket, type TcpNetConnectOpts } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { ABNORMAL, TrufluxError, UNTRUSTED_SERVER } from '../code.js';
import { frameSplitter } from '../stream.js';
import type { Connector, Transport, TransportEvents } from '../transport.js';

/** `node:net` connect options (`host`, `port`, …), passed through. */
export type TcpOptions = TcpNetConnectOpts;
/** `node:tls` connect options (`host`, `port`, `ca`, `servername`, …), passed through. */
export type TlsOptions = ConnectionOptions;

/** Whether `e` is Node's refusal of the server's certificate (its chain, dates or name): the
 * OpenSSL verification codes and `ERR_TLS_CERT_ALTNAME_INVALID`. Alerts the server sends
 * (`ERR_SSL_…`, say about our own certificate) are not. */
export const certificateRefused = (e: any) => typeof e?.code == 'string' && !e.code.startsWith('ERR_SSL_') && /CERT|SIGNATURE|UNABLE_TO|INVALID_CA|PATH_LENGTH|PURPOSE|HOSTNAME|ALTNAME/.test(e.code);

/** Why a connection could not be opened: `UNTRUSTED_SERVER` for a refused certificate (the
 * client then closes instead of reconnecting), else `ABNORMAL`. */
export const connectError = (e: any) =>
  certificateRefused(e) ? new TrufluxError(UNTRUSTED_SERVER, `${e.code}: ${e.message}`) : new TrufluxError(ABNORMAL, `connect failed: ${e?.message ?? 'closed'}`);

/** A connector for truflux over TCP, with Nagle's algorithm off (`setNoDelay`). */
export function tcp(options: TcpOptions): Connector {
  return (events, maxPayload) => wrap(netConnect(options), 'connect', events, maxPayload);
}

/** A connector for truflux over TLS; the options go to `tls.connect` as they are (`ca` to
 * trust a private CA, `servername` when the host is not the certificate's name). A
 * certificate Node refuses fails the attempt with `UNTRUSTED_SERVER`, which ends the client
 * (no reconnection loop). */
export function tls(options: TlsOptions): Connector {
  return (events, maxPayload) => wrap(tlsConnect(options), 'secureConnect', events, maxPayload);
}

/** Adapts a connecting socket; resolves on `ready`. */
function wrap(socket: Socket, ready: string, events: TransportEvents, maxPayload?: number): Promise<Transport> {
  socket.setNoDelay(true);
  const frames = frameSplitter(maxPayload);
  return new Promise((resolve, reject) => {
    let open = false;
    let ended = false;
    let failure: Error | undefined;
    const end = (code: number, reason: string, error?: unknown) => {
      if (open && !ended) events.close(code, reason, error);
      ended = true;
    };
    socket.once(ready, () => {
      open = true;
      resolve({
        stream: true,
        protocol: '',
        get buffered() {
          return socket.writableLength;
        },
        send: (bytes) => void socket.write(bytes),
        // After a stream error nothing more is read: drop the socket once our close is out.
        close: () => void socket.end(() => ended && socket.destroy()),
        abort: () => void socket.destroy(),
        pause: (on) => void (on ? socket.pause() : socket.resume()),
      });
    });
    socket.on('data', (chunk: Buffer) => {
      if (ended) return;
      // A plain view: frames are Uint8Arrays from every transport, never Buffers.
      frames.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
      while (!ended) {
        let frame: Uint8Array | undefined;
        try {
          frame = frames.next();
        } catch (e) {
          // A bad header ends what we read; the socket stays open for the engine's CLOSE.
          const error = e as TrufluxError;
          return end(error.code, error.message, error);
        }
        if (!frame) return;
        events.data(frame);
      }
    });
    socket.on('error', (e) => (failure = e));
    // The peer's end of stream: Node then ends our side too once what is queued is written
    // (allowHalfOpen is off), so an answering CLOSE still goes out.
    socket.on('end', () => {
      let cut: TrufluxError | undefined;
      try {
        frames.finish();
      } catch (e) {
        // Cut inside a frame: a resumable session takes it as a lost connection.
        cut = Object.assign(e as TrufluxError, { truncated: true });
      }
      end(cut ? cut.code : ABNORMAL, cut ? cut.message : '', cut);
    });
    socket.on('close', () => {
      if (!open) reject(connectError(failure));
      end(ABNORMAL, failure?.message ?? '', failure);
    });
  });
}
