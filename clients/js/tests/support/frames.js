// The frames PROTOCOL.md §8 shows, by the name of their vector, built with the codec as
// tests/codec.rs builds them. Shared by the Node tests and the browser smoke test.

import { Code, encode, encodeClose, encodeHello, Kind, messageId } from 'truflux';

const text = (s) => new TextEncoder().encode(s);

/** [vector name, frame] for a document of protocol `version`. */
export function specFrames(version) {
  return [
    ['client-hello', { kind: Kind.HELLO, id: 0, payload: encodeHello({ version, extensions: [] }) }],
    ['hello-with-extension', { kind: Kind.HELLO, id: 0, payload: encodeHello({ version, extensions: [{ type: 1, value: text('abc') }] }) }],
    ['message-raw', { kind: Kind.MESSAGE, id: 7, payload: text('hi') }],
    ['message-chat', { kind: Kind.MESSAGE, id: messageId('chat'), payload: encode({ text: 'yo' }) }],
    ['close-normal', { kind: Kind.CLOSE, id: 0, payload: encodeClose(Code.NORMAL, 'bye') }],
    ['error-unknown-message', { kind: Kind.ERROR, id: 0x01020304, payload: encodeClose(Code.UNKNOWN_MESSAGE, 'no') }],
    ['ping', { kind: Kind.PING, id: 0, payload: Uint8Array.of(0, 0, 0, 1) }],
    ['pong', { kind: Kind.PONG, id: 0, payload: Uint8Array.of(0, 0, 0, 1) }],
    ['message-empty', { kind: Kind.MESSAGE, id: 0, payload: new Uint8Array(0) }],
    ['message-protected', { kind: Kind.MESSAGE, id: 7, tag: Uint8Array.from({ length: 12 }, (_, i) => i), payload: text('hi') }],
  ];
}

/** Traffic secret 01 02 … 20 of §9.6. */
export const RECORD_SECRET = Uint8Array.from({ length: 32 }, (_, i) => i + 1);

/** The frame §9.6 seals: MESSAGE, id 7, "hi". */
export const recordFrame = () => ({ kind: Kind.MESSAGE, id: 7, payload: text('hi') });
