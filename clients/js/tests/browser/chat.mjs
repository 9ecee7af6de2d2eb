// The chat example (examples/chat.rs) as people use it: its own page in two Chromium pages and
// its terminal client (examples/messenger.rs) over TCP, in one room. Elements are found by
// their ARIA roles and names. Messages arrive everywhere in the same order; presence follows
// joins and leaves; a page of another site cannot connect; a file shared from one page
// reaches the other (and the terminal) with its SHA-256; markup in a message stays text; bad names are refused with a message; after
// the server restarts everyone comes back, rejoins and says so. Saves docs/chat.png.
// Build first: cargo build --example chat --example messenger.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browserPage } from './chromium.mjs';

const bin = (name) => fileURLToPath(new URL(`../../../../target/debug/examples/${name}`, import.meta.url));
const SCREENSHOT = fileURLToPath(new URL('../../../../docs/chat.png', import.meta.url));
const WAIT = 15000;

/** A child process whose output is read line by line; `line(re)` waits for a matching line. */
function child(binary, args, options = {}) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: cargo build --example chat --example messenger`);
  const proc = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  const lines = [];
  const waiting = new Set();
  let rest = '';
  let errors = '';
  proc.stderr.on('data', (d) => (errors += d));
  proc.stdout.on('data', (d) => {
    const parts = (rest + d).split('\n');
    rest = parts.pop();
    for (const l of parts) {
      lines.push(l);
      for (const w of waiting) w();
    }
  });
  const exited = new Promise((r) => proc.once('exit', r));
  return {
    proc,
    lines,
    get errors() {
      return errors;
    },
    /** The first line from `from` on that matches `re`, within the deadline. */
    line(re, from = 0, ms = WAIT) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = lines.findIndex((l, k) => k >= from && re.test(l));
          if (i < 0) return false;
          waiting.delete(check);
          clearTimeout(timer);
          resolve(lines[i].match(re));
          return true;
        };
        const timer = setTimeout(() => {
          waiting.delete(check);
          reject(new Error(`no line ${re} from ${binary} within ${ms} ms; got:\n${lines.join('\n')}\n${errors}`));
        }, ms);
        if (!check()) waiting.add(check);
      });
    },
    write: (text) => proc.stdin.write(`${text}\n`),
    stop() {
      proc.kill('SIGKILL');
      return exited;
    },
  };
}

/** Starts the chat server; resolves with it and its addresses once it printed them. */
async function startChat(key, tcp = '127.0.0.1:0', http = '127.0.0.1:0') {
  const server = child(bin('chat'), ['--tcp', tcp, '--http', http, '--key', key]);
  const [, url, pin] = await server.line(/open in a browser:\s+(http:\/\/[\d.:]+\/)#pin=([0-9a-f]{64})/);
  const [, tcpAddr] = await server.line(/terminal client:.* client (127\.0\.0\.1:\d+)/);
  return { server, url, pin, tcp: tcpAddr, http: new URL(url).host };
}

/** Opens the page in `page`, signs in as `nick`, and waits for the lobby. */
async function signIn(page, url, nick, pin) {
  await page.goto(`${url}#pin=${pin}`);
  await page.getByRole('textbox', { name: 'Nickname' }).fill(nick);
  await page.getByRole('button', { name: 'Enter the chat' }).click();
  await page.getByRole('list', { name: 'People in #lobby' }).getByText(`${nick} (you)`).waitFor({ timeout: WAIT });
}

const log = (page) => page.getByRole('log', { name: 'Messages' });
const seen = (page, text) => log(page).getByText(text, { exact: true }).first().waitFor({ timeout: WAIT });
const lines = (page) => log(page).locator('.line .text').allTextContents();

async function say(page, text) {
  await page.bringToFront(); // a background tab's animation frames, which clicks wait for, are throttled
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
}

async function pinnedAndEncrypted(c) {
  const { alice, url, pin } = c;
  await signIn(alice, url, 'alice', pin);
  const indicator = alice.getByRole('status', { name: 'Security' });
  await alice.waitForFunction(() => document.getElementById('security').textContent.includes('pinned'), null, { timeout: WAIT, polling: 50 });
  assert.equal(await indicator.textContent(), 'not encrypted · server key pinned');
  await alice.getByRole('button', { name: 'Encrypt my connection' }).click();
  await alice.waitForFunction(() => document.getElementById('security').textContent.startsWith('encrypted'), null, { timeout: WAIT, polling: 50 });
  assert.equal(await indicator.textContent(), 'encrypted · server key pinned');
  assert.equal(await alice.getByRole('button', { name: 'Encrypt my connection' }).getAttribute('aria-pressed'), 'true');
}

async function presence(c) {
  const { alice, bob, url, pin, dir } = c;
  await signIn(bob, url, 'bob', pin);
  await seen(alice, 'bob joined #lobby');
  const term = (c.term = child(bin('messenger'), ['client', c.chat.tcp, '--nick', 'term', '--room', 'lobby'], { cwd: dir }));
  await term.line(/you are in #lobby/);
  await seen(alice, 'term joined #lobby');
  await seen(bob, 'term joined #lobby');
  const people = await alice.getByRole('list', { name: 'People in #lobby' }).getByRole('listitem').allTextContents();
  assert.deepEqual(people.sort(), ['alice (you)', 'bob', 'term']);
  const online = await alice.getByRole('list', { name: 'Everyone online' }).getByRole('listitem').allTextContents();
  assert.deepEqual(online.sort(), ['alice (you)', 'bob', 'term']);
  const from = term.lines.length;
  term.write('/who');
  await term.line(/^\* in #lobby: (?=.*alice)(?=.*bob)(?=.*term)/, from);
  await term.line(/^\* 3 online: alice, bob, term$/, from);
}

async function accessible(c) {
  const { alice } = c;
  const tree = (await alice.locator('body').ariaSnapshot()).replace(/'/g, '');
  for (const part of ['- log "Messages"', '- textbox "Message"', '- list "Rooms"', '- list "People in #lobby"', '- list "Everyone online"', '- button "Leave #lobby"', '- button "Share a file"']) {
    assert.ok(tree.includes(part), `${part} in\n${tree}`);
  }
  assert.doesNotMatch(tree, /- button\s*(:|$)/m, 'every button has a name');
}

async function messagesInOrder(c) {
  const { alice, bob, term } = c;
  const from = term.lines.length;
  for (const text of ['a1', 'a2', 'a3']) await say(alice, text);
  for (const text of ['t1', 't2']) term.write(text);
  for (const text of ['b1', 'b2']) await say(bob, text);
  for (const page of [alice, bob]) await page.waitForFunction(() => document.querySelectorAll('#messages .line').length >= 7, null, { timeout: WAIT, polling: 50 });
  await term.line(/<bob> b2/, from);
  await term.line(/<term> t2/, from);
  const order = await lines(alice);
  assert.deepEqual(await lines(bob), order, 'both pages saw one order');
  const termOrder = term.lines.slice(from).map((l) => l.match(/^\[lobby\] <\w+> (\w+)$/)?.[1]).filter(Boolean);
  assert.deepEqual(termOrder, order, 'the terminal saw the same order');
  for (const who of ['a', 't', 'b']) {
    const mine = order.filter((x) => x.startsWith(who));
    assert.deepEqual(mine, [...mine].sort(), `${who}'s lines in the order sent`);
  }
  assert.equal(order.length, 7);
}

async function markupIsText(c) {
  const { alice, bob } = c;
  const evil = '<img src=x onerror="window.__owned=1"><b>bold</b>';
  await say(bob, evil);
  await seen(alice, evil);
  assert.equal(await alice.evaluate(() => window.__owned), undefined);
  assert.equal(await log(alice).locator('img, b').count(), 0, 'no element made from the text');
  assert.ok((await log(alice).textContent()).includes(evil));
  await say(bob, '/nick <b>bob</b>');
  await seen(alice, 'bob is now <b>bob</b>');
  await alice.getByRole('list', { name: 'People in #lobby' }).getByText('<b>bob</b>', { exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await alice.getByRole('list', { name: 'People in #lobby' }).locator('b').count(), 0, 'a name stays text');
  await say(bob, '/nick bob');
  await seen(alice, '<b>bob</b> is now bob');
}

async function badNames(c) {
  const { alice, term } = c;
  await say(alice, `/nick ${'x'.repeat(25)}`);
  await alice.bringToFront();
  await alice.getByRole('alert').getByText('a nickname is at most 24 characters').waitFor({ timeout: WAIT });
  await alice.getByRole('textbox', { name: 'Room' }).fill('r'.repeat(40));
  await alice.getByRole('button', { name: 'Join', exact: true }).click();
  await alice.getByRole('alert').getByText('a room name is at most 32 characters').waitFor({ timeout: WAIT });
  term.write(`/nick ${'y'.repeat(30)}`);
  await term.line(/! a nickname is at most 24 characters/);
}

async function fileShared(c) {
  const { alice, bob, dir, term } = c;
  const content = randomBytes(300 * 1024 + 7);
  const digest = createHash('sha256').update(content).digest('hex');
  const from = term.lines.length;
  await alice.bringToFront();
  await alice.getByLabel('File to share').setInputFiles({ name: 'notes.bin', mimeType: 'application/octet-stream', buffer: content });
  await alice.getByText('sent', { exact: true }).waitFor({ timeout: WAIT });
  await bob.bringToFront();
  await bob.getByRole('button', { name: 'Accept notes.bin' }).click();
  const save = bob.getByRole('link', { name: 'Save notes.bin' });
  await save.waitFor({ timeout: WAIT });
  const [download] = await Promise.all([bob.waitForEvent('download', { timeout: WAIT }), save.click()]);
  assert.equal(download.suggestedFilename(), 'notes.bin');
  const got = createHash('sha256').update(readFileSync(await download.path())).digest('hex');
  assert.equal(got, digest);
  assert.ok((await log(bob).textContent()).includes(`SHA-256 ${digest}`));
  await term.line(/alice offers notes\.bin .*\/accept/, from);
  term.write('/accept');
  const [, saved, hash] = await term.line(/saved (.+) \(.*SHA-256 ([0-9a-f]{64})\)/, from);
  assert.equal(hash, digest);
  assert.equal(createHash('sha256').update(readFileSync(join(dir, saved))).digest('hex'), digest);
  await alice.screenshot({ path: SCREENSHOT });
}

async function fileDroppedAndDeclined(c) {
  const { alice, bob, term } = c;
  const from = term.lines.length;
  await alice.bringToFront();
  const dataTransfer = await alice.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['dropped on the page\n'], 'dropped.txt', { type: 'text/plain' }));
    return dt;
  });
  await alice.getByRole('region', { name: '#lobby' }).dispatchEvent('drop', { dataTransfer });
  await bob.bringToFront();
  await bob.getByRole('button', { name: 'Decline dropped.txt' }).click();
  await seen(bob, 'you declined dropped.txt from alice');
  await term.line(/alice offers dropped\.txt/, from);
  term.write('/decline');
  await term.line(/^\* declined dropped\.txt$/, from);
}

async function leaving(c) {
  const { alice, bob, term } = c;
  const from = term.lines.length;
  await bob.bringToFront();
  await bob.getByRole('button', { name: 'Leave #lobby' }).click();
  await seen(alice, 'bob left #lobby');
  await term.line(/\[lobby\] \* bob left/, from);
  await alice.waitForFunction(() => ![...document.querySelectorAll('#people li')].some((li) => li.textContent === 'bob'), null, { timeout: WAIT, polling: 50 });
  await bob.getByRole('button', { name: 'Join #lobby' }).click();
  await seen(alice, 'bob joined #lobby');
  // The second note of bob joining comes after the room's history.
  const twice = () => [...document.querySelectorAll('#messages .notice')].filter((n) => n.textContent.endsWith('bob joined #lobby')).length === 2;
  await bob.waitForFunction(twice, null, { timeout: WAIT, polling: 50 });
  const again = await lines(bob);
  assert.deepEqual([...new Set(again)], again, 'the history of a rejoined room shows each line once');
  assert.ok(again.includes('a1'));
}

async function restart(c) {
  const { alice, bob, key, term } = c;
  const from = term.lines.length;
  await c.chat.server.stop();
  await alice.getByRole('status').getByText('connection lost: reconnecting…').waitFor({ timeout: WAIT });
  await term.line(/^\* connection lost/, from);
  await say(alice, 'typed while down');
  term.write('term typed while down');
  c.chat = await startChat(key, c.chat.tcp, c.chat.http);
  const back = 'reconnected (messages may have been missed)';
  await seen(alice, back);
  await seen(bob, back);
  await term.line(/reconnected \(messages may have been missed\)/, from);
  await alice.getByRole('list', { name: 'People in #lobby' }).getByText('term').waitFor({ timeout: WAIT });
  await alice.getByRole('list', { name: 'People in #lobby' }).getByText('bob').waitFor({ timeout: WAIT });
  await seen(bob, 'typed while down');
  await seen(bob, 'term typed while down');
  await term.line(/<alice> typed while down/, from);
  await say(alice, 'after restart');
  await seen(bob, 'after restart');
  await term.line(/<alice> after restart/, from);
  const indicator = await alice.getByRole('status', { name: 'Security' }).textContent();
  assert.equal(indicator, 'encrypted · server key pinned', 'the same key, encryption switched on again');
}

/** The steps, in order, on one chat; each takes the shared context. */
/** Whether a WebSocket to the chat opens from `page` ('open') or is refused ('refused'). */
const tryWebSocket = (page, url) =>
  page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url, 'truflux');
        ws.onopen = () => (ws.close(), resolve('open'));
        ws.onerror = () => resolve('refused');
      }),
    url,
  );

async function otherSitesRefused(c) {
  const { alice, chat } = c;
  const url = `ws://${chat.http}/chat`;
  assert.equal(await tryWebSocket(alice, url), 'open', 'the chat page itself may connect');
  // A page of another origin (another port is another site): the upgrade gets 403.
  const other = createServer((_req, res) => res.end('<!doctype html><title>elsewhere</title>'));
  await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
  const page = await alice.context().newPage();
  try {
    await page.goto(`http://127.0.0.1:${other.address().port}/`);
    assert.equal(await tryWebSocket(page, url), 'refused');
  } finally {
    await page.close();
    other.close();
  }
}

const STEPS = [
  ['the page is served by the chat server, with a pinned key and encryption on request', pinnedAndEncrypted],
  ['presence: a page and a terminal client joining are seen by the others', presence],
  ['a page of another site cannot open the chat\'s WebSocket', otherSitesRefused],
  ['the page is accessible by roles and names: a log, labelled textboxes, named lists and buttons', accessible],
  ['messages arrive everywhere, in the same order', messagesInOrder],
  ['markup in a message or a name is shown as text and runs nothing', markupIsText],
  ['bad names are refused with a message', badNames],
  ['a file shared from one page reaches the other and the terminal with its SHA-256', fileShared],
  ['a file dropped on the page is offered, and the receiver may decline it', fileDroppedAndDeclined],
  ['leaving is seen by the others', leaving],
  ['after a restart of the server everyone comes back, rejoins and says so', restart],
];

test('the chat example: two pages and a terminal client in one room', { timeout: 240000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'truflux-chat-'));
  const key = join(dir, 'server.key');
  const chat = await startChat(key);
  const c = { chat, url: chat.url, pin: chat.pin, dir, key, term: undefined };
  t.after(async () => {
    await c.term?.stop();
    await c.chat.server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const { page: alice, errors } = await browserPage(t);
  const bob = await alice.context().newPage();
  bob.on('pageerror', (e) => errors.push(e));
  await alice.setViewportSize({ width: 1200, height: 720 });
  Object.assign(c, { alice, bob });
  for (const [name, step] of STEPS) await t.test(name, () => step(c));
  assert.deepEqual(errors, [], 'the pages raised no error');
});
