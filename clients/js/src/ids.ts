/** Message ids from names (PROTOCOL.md §5), so both sides agree without a table. */

import { utf8 } from './octets.js';

/** FNV-1a 32-bit of the UTF-8 name with bit 31 cleared: `messageId("chat") === 0x224bf9ab`. */
export function messageId(name: string): number {
  let h = 0x811c9dc5;
  for (const octet of utf8.encode(name)) h = Math.imul(h ^ octet, 0x01000193);
  return h & 0x7fffffff;
}
