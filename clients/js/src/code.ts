/**
 * The std codes of PROTOCOL.md §6 and the error type that carries them.
 *
 * Codes are WebSocket close codes (RFC 6455 §7.4): 1000–1015 keep their WebSocket meaning,
 * 4000–4999 are truflux's own. A code a peer sends that is not named here is kept as it is.
 */

// One constant per code, so that the modules that use a code inline its number; the table
// below gathers them by name.
export const NORMAL = 1000;
export const GOING_AWAY = 1001;
export const PROTOCOL_ERROR = 1002;
export const UNSUPPORTED_DATA = 1003;
export const ABNORMAL = 1006;
export const POLICY_VIOLATION = 1008;
export const MESSAGE_TOO_BIG = 1009;
export const INTERNAL_ERROR = 1011;
export const TRY_AGAIN_LATER = 1013;
export const UNKNOWN_MESSAGE = 4000;
export const INVALID_PAYLOAD = 4001;
export const UNMET_DEPENDENCY = 4002;
export const REPEATED_SINGLETON = 4003;
export const UNIMPLEMENTED = 4004;
export const HANDSHAKE_TIMEOUT = 4005;
export const VERSION_MISMATCH = 4006;
export const SLOW_CONSUMER = 4007;
export const UNAUTHORIZED = 4008;
export const HEARTBEAT_TIMEOUT = 4009;
export const RESUME_FAILED = 4010;
export const UNKNOWN_REQUEST = 4011;
export const NO_REPLY = 4012;
export const REQUEST_TIMEOUT = 4013;
export const NO_COMMON_SUITE = 4020;
export const SECURITY_REQUIRED = 4021;
export const HANDSHAKE_FAILED = 4022;
export const BAD_RECORD = 4023;
export const UNEXPECTED_PLAINTEXT = 4024;
export const UNTRUSTED_SERVER = 4025;
export const FILE_DECLINED = 4030;
export const FILE_CANCELLED = 4031;
export const FILE_INTEGRITY = 4032;
export const UNKNOWN_TRANSFER = 4033;
export const TOO_MANY_TRANSFERS = 4034;
export const FILE_FLOW_VIOLATION = 4035;
export const FILE_IO = 4036;

/** Every std code of PROTOCOL.md §6, by name. */
export const Code = {
  NORMAL,
  GOING_AWAY,
  PROTOCOL_ERROR,
  UNSUPPORTED_DATA,
  ABNORMAL,
  POLICY_VIOLATION,
  MESSAGE_TOO_BIG,
  INTERNAL_ERROR,
  TRY_AGAIN_LATER,
  UNKNOWN_MESSAGE,
  INVALID_PAYLOAD,
  UNMET_DEPENDENCY,
  REPEATED_SINGLETON,
  UNIMPLEMENTED,
  HANDSHAKE_TIMEOUT,
  VERSION_MISMATCH,
  SLOW_CONSUMER,
  UNAUTHORIZED,
  HEARTBEAT_TIMEOUT,
  RESUME_FAILED,
  UNKNOWN_REQUEST,
  NO_REPLY,
  REQUEST_TIMEOUT,
  NO_COMMON_SUITE,
  SECURITY_REQUIRED,
  HANDSHAKE_FAILED,
  BAD_RECORD,
  UNEXPECTED_PLAINTEXT,
  UNTRUSTED_SERVER,
  FILE_DECLINED,
  FILE_CANCELLED,
  FILE_INTEGRITY,
  UNKNOWN_TRANSFER,
  TOO_MANY_TRANSFERS,
  FILE_FLOW_VIOLATION,
  FILE_IO,
} as const;

export type CodeName = keyof typeof Code;

/** The name of a std code, or `"UNKNOWN"` for a code this version does not name. */
export function codeName(code: number): CodeName | 'UNKNOWN' {
  for (const name in Code) {
    if (Code[name as CodeName] === code) return name as CodeName;
  }
  return 'UNKNOWN';
}

/** An error with the std code a connection reports or closes with when it meets it; `id`: the
 * message, request or transfer it is about, where there is one. */
export class TrufluxError extends Error {
  override name = 'TrufluxError';
  constructor(
    readonly code: number,
    message?: string,
    readonly id?: number,
  ) {
    super(message || 'code ' + code);
  }
}

/** A {@link TrufluxError}. */
export const error = (code: number, reason?: string, id?: number) => new TrufluxError(code, reason, id);
