/**
 * `truflux`: the core of the JavaScript client. The client itself (`connect`), the frame codec
 * and control payloads (PROTOCOL.md §2–§4), std codes (§6), message ids (§5), MessagePack,
 * and the transport interface with its WebSocket adapter. Security is in `truflux/security`,
 * file transfer support in `truflux/files`, the Node transports in `truflux/node`.
 */

export { Code, codeName, TrufluxError, type CodeName } from './code.js';
export {
  decodeExact,
  DEFAULT_MAX_PAYLOAD,
  encodeFrame,
  frame,
  FrameError,
  header,
  HEADER_LEN,
  isKind,
  Kind,
  MAX_ID,
  parseHeader,
  PROTECTED,
  SEAL_OVERHEAD,
  TAG_LEN,
  type Frame,
  type Header,
} from './frame.js';
export * from './control.js';
export * from './ids.js';
export * from './msgpack.js';
export * from './transport.js';
export {
  connect,
  endsSession,
  type Client,
  type ClientOptions,
  type Codec,
  type Files,
  type FilesPlugin,
  type Link,
  type MessageContext,
  type Name,
  type OpeningIo,
  type Sec,
  type SecurityPlugin,
} from './client.js';
export * from './hello.js';
