// The chat page: the truflux JavaScript client (served by the chat server itself) on the
// page's WebSocket, with the security and files plugins. The messages are those of
// examples/support/chat.rs. Everything people send is put into the page as text
// (textContent, text nodes), never as markup.

import { codeName, connect, files, security, webSocket } from '/truflux.min.js';

const MAX_NICK = 24;
const $ = (id) => document.getElementById(id);

/** An element with attributes (`text` sets its text) and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) {
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

const state = {
  client: undefined,
  sec: undefined,
  files: undefined,
  me: undefined,
  nick: '',
  rooms: new Set(),
  current: undefined,
  logs: new Map(),
  directory: { online: 0, rooms: [] },
  notes: [],
  encrypt: false,
  connected: false,
  seen: new Set(),
  online: false,
  pending: [],
};

/** Words for a close or error code. */
const WORDS = {
  1001: 'the server is shutting down',
  1006: 'the connection was lost',
  1008: 'you were sending too fast',
  1013: 'the server is busy: try again later',
  4007: 'this page could not keep up',
  4010: 'the server no longer knows this session',
  4021: 'the server requires encryption',
  4025: "the server's key is not the pinned one",
  4034: 'too many files at once',
};
function words(code) {
  if (WORDS[code]) return WORDS[code];
  const name = codeName(code);
  return name ? name.toLowerCase().replace(/_/g, ' ') : `code ${code}`;
}

function problem(text) {
  $('problem').textContent = text;
}

function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

// ---- the message log, one per room ----

function logOf(room) {
  if (!state.logs.has(room)) state.logs.set(room, []);
  return state.logs.get(room);
}

/** Adds `node` to the log of `room` (the current room when none is given). */
function show(room, node) {
  const key = room ?? state.current ?? '';
  const log = logOf(key);
  log.push(node);
  if (log.length > 500) log.shift().remove();
  if (key === (state.current ?? '')) {
    const box = $('messages');
    box.append(node);
    box.scrollTop = box.scrollHeight;
  }
}

function stamp() {
  const now = new Date();
  return el('time', { datetime: now.toISOString(), text: now.toTimeString().slice(0, 5) });
}

function line({ id, room, from, text }) {
  // A room's history comes again when it is joined again: each line is shown once.
  if (state.seen.has(id)) return;
  state.seen.add(id);
  if (state.seen.size > 5000) state.seen.delete(state.seen.values().next().value);
  const mine = from === state.nick;
  show(room, el('p', { class: mine ? 'line mine' : 'line' }, stamp(), el('span', { class: 'from', text: from }), el('span', { class: 'text', text })));
}

function note(room, text, error = false) {
  show(room, el('p', { class: error ? 'notice error' : 'notice' }, stamp(), el('span', { text })));
  if (error) problem(text);
}

function switchTo(room) {
  // What was said before any room (the welcome) stays at the top of the first room's log.
  if (room && state.logs.has('')) logOf(room).unshift(...state.logs.get(''));
  if (room) state.logs.delete('');
  state.current = room;
  $('room-title').textContent = room ? `#${room}` : 'No room';
  $('messages').replaceChildren(...logOf(room ?? ''));
  $('messages').scrollTop = $('messages').scrollHeight;
  render();
}

// ---- rooms and people ----

function render() {
  const rooms = new Map(state.directory.rooms.map((r) => [r.name, r.members]));
  for (const r of state.rooms) if (!rooms.has(r)) rooms.set(r, []);
  const items = [...rooms.keys()].sort().map((name) => {
    const count = el('span', { class: 'count', text: String(rooms.get(name).length) });
    if (!state.rooms.has(name)) {
      return el('li', {}, el('button', { type: 'button', class: 'room', onclick: () => send('join', name) }, `#${name}`), count,
        el('button', { type: 'button', class: 'quiet', 'aria-label': `Join #${name}`, onclick: () => send('join', name) }, 'Join'));
    }
    const open = el('button', { type: 'button', class: 'room', 'aria-current': String(name === state.current), onclick: () => switchTo(name) }, `#${name}`);
    return el('li', {}, open, count,
      el('button', { type: 'button', class: 'quiet', 'aria-label': `Leave #${name}`, onclick: () => send('leave', name) }, 'Leave'));
  });
  $('rooms').replaceChildren(...items);
  const members = state.current ? rooms.get(state.current) ?? [] : [];
  $('people').setAttribute('aria-label', state.current ? `People in #${state.current}` : 'People');
  $('people').replaceChildren(...members.map((p) => {
    const me = state.me && p.id === state.me.id;
    return el('li', { class: me ? 'me' : '' }, me ? `${p.nick} (you)` : p.nick);
  }));
  $('online').textContent = `${state.directory.online} online`;
  $('everyone').replaceChildren(...(state.directory.people ?? []).map((p) => {
    const me = state.me && p.id === state.me.id;
    return el('li', { class: me ? 'me' : '' }, me ? `${p.nick} (you)` : p.nick);
  }));
}

// ---- sending ----

function send(name, value) {
  try {
    state.client.send(name, value);
    return true;
  } catch (e) {
    note(undefined, `not sent: ${words(e.code)}`, true);
    return false;
  }
}

function checkNick(nick) {
  if (!nick) return 'a nickname cannot be empty';
  if ([...nick].length > MAX_NICK) return `a nickname is at most ${MAX_NICK} characters`;
  return undefined;
}

function command(text) {
  const [word, ...rest] = text.slice(1).split(' ');
  const arg = rest.join(' ').trim();
  if (word === 'nick') {
    const why = checkNick(arg);
    return why ? note(undefined, why, true) : send('nick', arg);
  }
  if (word === 'join') return send('join', arg);
  if (word === 'leave') return state.current || arg ? send('leave', arg || state.current) : note(undefined, 'you are in no room', true);
  note(undefined, `unknown command /${word}: try /nick NAME, /join ROOM, /leave`, true);
}

function say(event) {
  event.preventDefault();
  const input = $('message');
  const text = input.value;
  if (!text.trim()) return;
  if (text.startsWith('/')) command(text.trim());
  else if (!state.current) return note(undefined, 'join a room first', true);
  else if (!state.online && state.client.state !== 'closed') {
    // Held until the connection is back and the rooms are joined again.
    state.pending.push({ room: state.current, text });
    note(state.current, 'not connected: this line goes out when the connection is back');
  } else if (!send('say', { room: state.current, text })) return;
  input.value = '';
}

// ---- files ----

function transfer(label, total) {
  const bar = el('progress', { max: String(total || 1), value: '0', 'aria-label': label });
  const status = el('span', { class: 'state' });
  const hash = el('span', { class: 'hash' });
  const box = el('div', { class: 'transfer' }, el('span', { text: label }), bar, status, hash);
  return { box, bar, status, hash };
}

function share(file) {
  if (!state.current) return problem('join a room first, then share a file with it');
  const room = state.current;
  if (!send('share', room)) return;
  const t = transfer(`Sending ${file.name}`, file.size);
  show(room, t.box);
  let sending;
  try {
    sending = state.files.send(file, { name: file.name });
  } catch (e) {
    return (t.status.textContent = `failed: ${words(e.code)}`);
  }
  sending.on('progress', (n) => (t.bar.value = n));
  sending.done.then(
    ({ sha256 }) => {
      t.bar.value = file.size;
      t.status.textContent = 'sent';
      t.hash.textContent = `SHA-256 ${sha256}`;
    },
    (e) => (t.status.textContent = `failed: ${words(e.code)}`),
  );
}

function offered(offer) {
  const n = state.notes.shift() ?? { room: state.current, from: 'someone', name: offer.name, size: offer.size };
  const t = transfer(`Receiving ${n.name}`, n.size);
  const accept = el('button', { type: 'button', 'aria-label': `Accept ${n.name}` }, 'Accept');
  const decline = el('button', { type: 'button', class: 'quiet', 'aria-label': `Decline ${n.name}` }, 'Decline');
  const ask = el('p', { class: 'notice' }, stamp(), `${n.from} shares ${n.name} (${size(n.size)}) `, accept, ' ', decline);
  show(n.room, ask);
  let decided = false;
  offer.done.catch(() => decided || ask.replaceChildren(stamp(), el('span', { text: `${n.name} from ${n.from} is no longer offered` })));
  decline.addEventListener('click', () => {
    decided = true;
    offer.decline('declined');
    ask.replaceChildren(stamp(), el('span', { text: `you declined ${n.name} from ${n.from}` }));
  });
  accept.addEventListener('click', () => {
    decided = true;
    ask.replaceWith(t.box);
    const log = logOf(n.room);
    log[log.indexOf(ask)] = t.box;
    offer.on('progress', (b) => (t.bar.value = b));
    offer.accept();
    offer.done.then(
      ({ sha256 }) => {
        t.bar.value = n.size;
        t.status.textContent = 'received';
        t.hash.textContent = `SHA-256 ${sha256}`;
        const url = URL.createObjectURL(offer.blob());
        t.box.append(el('a', { href: url, download: n.name }, `Save ${n.name}`));
      },
      (e) => (t.status.textContent = `failed: ${words(e.code)}`),
    );
  });
}

// ---- security ----

function securityState() {
  const s = state.sec;
  const indicator = $('security');
  if (!s || !state.connected) return;
  const encrypted = s.isSecure && s.isPeerSecure;
  const pinned = s.serverAuthenticated;
  indicator.textContent = `${encrypted ? 'encrypted' : 'not encrypted'} · ${pinned ? 'server key pinned' : 'server key not pinned'}`;
  indicator.className = `${pinned ? 'pinned' : 'unpinned'} ${encrypted ? 'encrypted' : ''}`;
  indicator.title = s.serverKey ? `server key ${s.serverKey}` : '';
  $('encrypt').setAttribute('aria-pressed', String(state.encrypt));
}

function encrypt(on) {
  state.encrypt = on;
  try {
    state.sec.setOwnSecurity(on);
    state.sec.setPeerSecurity(on);
  } catch (e) {
    problem(`encryption is not available: ${words(e.code)}`);
  }
  securityState();
}

// ---- the connection ----

/** Sends the lines typed while the connection was down, in order. */
function flush() {
  state.online = true;
  for (const say of state.pending.splice(0)) send('say', say);
}

function status(text) {
  $('status').textContent = text;
}

function handlers(client) {
  client.on('you', (p) => {
    state.me = p;
    state.nick = p.nick;
    render();
  });
  client.on('joined', (room) => {
    state.rooms.add(room);
    switchTo(room);
  });
  client.on('left', (room) => {
    state.rooms.delete(room);
    if (state.current === room) switchTo([...state.rooms][0]);
    else render();
  });
  client.on('line', line);
  client.on('notice', (n) => note(n.room ?? undefined, n.text, n.error));
  client.on('presence', (p) => note(p.room, `${p.nick} ${p.joined ? 'joined' : 'left'} #${p.room}`));
  client.on('directory', (d) => {
    state.directory = d;
    render();
  });
  client.on('shared', (n) => state.notes.push(n));
  client.on('file', offered);
}

function lifecycle(client) {
  client.on('connected', () => {
    state.connected = true;
    flush();
    status(`connected as ${state.nick}`);
    $('encrypt').disabled = false;
    securityState();
  });
  client.on('disconnected', () => {
    state.online = false;
    status('connection lost: reconnecting…');
  });
  client.on('reconnected', (attempts, resumed) => {
    status(`connected as ${state.nick}`);
    if (!resumed) {
      // A new session: the server forgot our name and rooms.
      send('nick', state.nick);
      for (const room of state.rooms) send('join', room);
      if (state.encrypt) encrypt(true);
      note(undefined, 'reconnected (messages may have been missed)');
    }
    flush();
    securityState();
  });
  client.on('closed', (code, reason) => {
    state.connected = false;
    state.online = false;
    status(`disconnected: ${words(code)}${reason ? ` (${reason})` : ''}`);
    $('encrypt').disabled = true;
  });
  client.on('error', (e) => problem(words(e.code)));
  for (const event of ['handshaked', 'secure', 'peerSecure']) client.on(event, securityState);
}

function start(event) {
  event.preventDefault();
  const nick = $('nick').value.trim();
  const why = checkNick(nick);
  if (why) return problem(why);
  const pin = $('pin').value.trim().toLowerCase().replace(/:/g, '');
  if (pin && !/^[0-9a-f]{64}$/.test(pin)) return problem('a server key is 64 hex digits');
  problem('');
  state.nick = nick;
  state.sec = security(pin ? { pins: [pin] } : {});
  state.files = files();
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/chat`;
  const client = connect(webSocket(url), { security: state.sec, files: state.files, renew: true });
  state.client = client;
  handlers(client);
  lifecycle(client);
  status('connecting…');
  send('nick', nick);
  send('join', 'lobby');
  $('login').hidden = true;
  $('chat').hidden = false;
  $('message').focus();
}

function dragAndDrop() {
  const talk = $('talk');
  talk.addEventListener('dragover', (e) => {
    e.preventDefault();
    talk.classList.add('dragging');
  });
  talk.addEventListener('dragleave', () => talk.classList.remove('dragging'));
  talk.addEventListener('drop', (e) => {
    e.preventDefault();
    talk.classList.remove('dragging');
    for (const file of e.dataTransfer?.files ?? []) share(file);
  });
}

const pinned = new URLSearchParams(location.hash.slice(1)).get('pin');
if (pinned) $('pin').value = pinned;
$('login').addEventListener('submit', start);
$('say-form').addEventListener('submit', say);
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (send('join', $('room-name').value)) $('room-name').value = '';
});
$('attach').addEventListener('click', () => $('file-input').click());
$('file-input').addEventListener('change', () => {
  for (const file of $('file-input').files) share(file);
  $('file-input').value = '';
});
$('encrypt').addEventListener('click', () => encrypt(!state.encrypt));
dragAndDrop();
document.body.dataset.ready = 'true';
