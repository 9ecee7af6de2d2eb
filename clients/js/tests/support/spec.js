// Reads what the tests check from docs/PROTOCOL.md, so that they follow the document: the hex
// vectors, the tables of kinds and codes, the protocol version, the key schedule's label prefix. Plain ES module without Node
// APIs: the browser smoke test uses it too, on the text it fetches.

/** The protocol version the document describes: "# truflux wire protocol, version N". */
export function specVersion(markdown) {
  const match = /^# truflux wire protocol, version (\d+)/m.exec(markdown);
  if (!match) throw new Error('PROTOCOL.md does not name its version in its title');
  return Number(match[1]);
}

/** The key schedule's label prefix, as §9.2 writes it (`HKDF-Expand(prk, "truflux v2 " ‖ …`):
 * it names the key schedule's version, which need not be the protocol's. */
export function specLabelPrefix(markdown) {
  const match = /HKDF-Expand\(prk, "(truflux v\d+ )"/.exec(markdown);
  if (!match) throw new Error('PROTOCOL.md §9.2 does not show the label prefix');
  return match[1];
}

/** The octets of hex text; spaces and `#` comments are not part of them. */
export function hexOctets(text) {
  const hex = text
    .split('\n')
    .map((line) => line.split('#')[0])
    .join('')
    .replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not hex: ${hex}`);
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => parseInt(pair, 16));
}

/** Every `<!-- MARKER: name -->` followed by a fenced block of hex, as [name, octets], in
 * document order (as tests/codec.rs reads them). `marker` is "vector" or "sealed-vector". */
export function vectors(markdown, marker = 'vector') {
  const out = [];
  const opening = `<!-- ${marker}: `;
  let rest = markdown;
  for (let at = rest.indexOf(opening); at >= 0; at = rest.indexOf(opening)) {
    rest = rest.slice(at + opening.length);
    const name = rest.slice(0, rest.indexOf(' -->'));
    const open = rest.indexOf('```');
    const bodyStart = open + rest.slice(open).indexOf('\n') + 1;
    const bodyEnd = bodyStart + rest.slice(bodyStart).indexOf('```');
    out.push([name, hexOctets(rest.slice(bodyStart, bodyEnd))]);
    rest = rest.slice(bodyEnd + 3);
  }
  return out;
}

/** The rows `| number | \`NAME\` |` of the document's tables, as [number, name]. */
export function namedRows(markdown) {
  return [...markdown.matchAll(/^\| (0x[0-9a-f]+|\d+) +\| `([A-Z_]+)` *\|/gm)].map(([, n, name]) => [Number(n), name]);
}

/** The section of the document that starts at the heading `## N.` (up to the next `## `). */
export function section(markdown, number) {
  const start = markdown.indexOf(`\n## ${number}. `);
  if (start < 0) throw new Error(`PROTOCOL.md has no section ${number}`);
  const end = markdown.indexOf('\n## ', start + 1);
  return markdown.slice(start, end < 0 ? undefined : end);
}
