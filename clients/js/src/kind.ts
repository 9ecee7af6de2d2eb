/**
 * The frame kinds of PROTOCOL.md §3 and §10. Each is a constant of its own as well as an entry of
 * `Kind`, so that modules using a kind inline its number and pages that do not import `Kind`
 * do not ship the table.
 */

export const HELLO = 0x01;
export const CLOSE = 0x02;
export const ERROR = 0x03;
export const PING = 0x04;
export const PONG = 0x05;
export const SECURITY = 0x06;
export const ACK = 0x07;
export const MESSAGE = 0x10;
export const REQUEST = 0x11;
export const REPLY = 0x12;
export const REPLY_ERROR = 0x13;
export const FILE_OFFER = 0x20;
export const FILE_CHUNK = 0x21;
export const FILE_END = 0x22;
export const FILE_ABORT = 0x23;
export const FILE_ACCEPT = 0x24;
export const FILE_REFUSE = 0x25;
export const FILE_CREDIT = 0x26;
export const FILE_PAUSE = 0x27;
export const FILE_RESUME = 0x28;
export const FILE_DONE = 0x29;

/** Every frame kind, by name. */
export const Kind = {
  HELLO,
  CLOSE,
  ERROR,
  PING,
  PONG,
  SECURITY,
  ACK,
  MESSAGE,
  REQUEST,
  REPLY,
  REPLY_ERROR,
  FILE_OFFER,
  FILE_CHUNK,
  FILE_END,
  FILE_ABORT,
  FILE_ACCEPT,
  FILE_REFUSE,
  FILE_CREDIT,
  FILE_PAUSE,
  FILE_RESUME,
  FILE_DONE,
} as const;
