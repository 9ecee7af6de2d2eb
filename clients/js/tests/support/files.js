// Where the tests find the protocol document. TRUFLUX_PROTOCOL_MD points them at another copy,
// for example one version's document while the working tree holds the next.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const PROTOCOL_MD = process.env.TRUFLUX_PROTOCOL_MD ?? fileURLToPath(new URL('../../../../docs/PROTOCOL.md', import.meta.url));

export const protocol = () => readFileSync(PROTOCOL_MD, 'utf8');
