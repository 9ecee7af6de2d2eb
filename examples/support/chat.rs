//! The chat shared by the `chat` and `messenger` examples: its messages, and the server's
//! nicknames, rooms, presence and file sharing, with the checks on what people send.
//!
//! Messages (MessagePack maps, ids from the names, so the page's JavaScript client speaks them
//! by name):
//!
//! | client → server | server → client |
//! |---|---|
//! | `nick` name | `you` {id, nick}: who the server knows you as |
//! | `join` room, `leave` room | `joined` room, `left` room: your own membership |
//! | `say` {room, text} | `line` {id, room, from, text}: a line in a room, yours included |
//! | `share` room: the next file offered goes to that room | `shared` {room, from, name, size}: announces the offer that follows |
//! | | `presence` {room, nick, joined}: someone joined or left a room you are in |
//! | | `directory` {online, people, rooms: [{name, members}]} (people as {id, nick}): who is where |
//! | | `notice` {room, text, error}: the server says something (a refusal: `error` true) |
//!
//! Files: the server receives a shared file itself (into memory, at most [`MAX_FILE`] each and
//! [`MAX_HELD`] for all files at once), then offers it to every other member of the room; each
//! receiver accepts or declines its own copy, and the file is dropped once every offer ended.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use truflux::file::{FileOffer, FileStatus};
use truflux::{Peer, Presence, Server, ServerBuilder};
use truflux_msg::{Msg, Registry};

pub const NICK: Msg<String> = Msg::named("nick");
pub const JOIN: Msg<String> = Msg::named("join");
pub const LEAVE: Msg<String> = Msg::named("leave");
pub const SAY: Msg<Say> = Msg::named("say");
pub const SHARE: Msg<String> = Msg::named("share");
pub const YOU: Msg<Person> = Msg::named("you");
pub const JOINED: Msg<String> = Msg::named("joined");
pub const LEFT: Msg<String> = Msg::named("left");
pub const LINE: Msg<Line> = Msg::named("line");
pub const FILE: Msg<FileNote> = Msg::named("shared");
pub const PRESENCE: Msg<PresenceNote> = Msg::named("presence");
pub const DIRECTORY: Msg<Directory> = Msg::named("directory");
pub const NOTICE: Msg<Notice> = Msg::named("notice");

/// Longest nickname, in characters.
pub const MAX_NICK: usize = 24;
/// Longest room name, in characters.
pub const MAX_ROOM: usize = 32;
/// Longest line, in characters.
pub const MAX_TEXT: usize = 2000;
/// Most rooms one person is in at once.
pub const MAX_ROOMS: usize = 16;
/// Largest file shared, in octets.
pub const MAX_FILE: u64 = 32 << 20;
/// Most octets of shared files the server holds at once.
pub const MAX_HELD: usize = 256 << 20;
/// How long a receiver may leave an offer undecided before it is withdrawn.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Say {
    pub room: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// Unique per line and server run: a client that rejoins a room gets its history again and
    /// can tell the lines it has from new ones.
    pub id: String,
    pub room: String,
    pub from: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Person {
    /// The peer's id, in hex (a string: JavaScript numbers cannot hold every 64-bit id).
    pub id: String,
    pub nick: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileNote {
    pub room: String,
    pub from: String,
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceNote {
    pub room: String,
    pub nick: String,
    pub joined: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Directory {
    pub online: u64,
    /// Everyone connected here, by nickname.
    pub people: Vec<Person>,
    pub rooms: Vec<RoomInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub members: Vec<Person>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub room: Option<String>,
    pub text: String,
    pub error: bool,
}

/// Checks a nickname: the trimmed name, or why it is refused.
pub fn check_nick(nick: &str) -> Result<String, String> {
    let nick = nick.trim();
    if nick.is_empty() {
        return Err("a nickname cannot be empty".into());
    }
    if nick.chars().count() > MAX_NICK {
        return Err(format!("a nickname is at most {MAX_NICK} characters"));
    }
    if nick.chars().any(char::is_control) {
        return Err("a nickname cannot contain control characters".into());
    }
    Ok(nick.to_owned())
}

/// Checks a room name: the trimmed name, or why it is refused.
pub fn check_room(room: &str) -> Result<String, String> {
    let room = room.trim().trim_start_matches('#');
    if room.is_empty() {
        return Err("a room name cannot be empty".into());
    }
    if room.chars().count() > MAX_ROOM {
        return Err(format!("a room name is at most {MAX_ROOM} characters"));
    }
    if room.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("a room name cannot contain spaces or control characters".into());
    }
    Ok(room.to_owned())
}

/// `n` octets for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[derive(Clone)]
struct Nick(String);

/// Rooms named by `share`, oldest first: the next offers go there.
#[derive(Clone, Default)]
struct Shares(Arc<Mutex<VecDeque<String>>>);

fn nick(peer: &Peer) -> String {
    peer.session()
        .get::<Nick>()
        .map(|n| n.0)
        .unwrap_or_else(|| guest(peer.id()))
}

/// The name of someone who chose none: `guest` and a few digits of the id.
fn guest(id: truflux::PeerId) -> String {
    format!("guest{}", id.0 % 100_000)
}

fn hex_id(id: truflux::PeerId) -> String {
    format!("{:x}", id.0)
}

fn label(member: &truflux::Member) -> String {
    member.label.clone().unwrap_or_else(|| guest(member.id))
}

fn notice(room: Option<&str>, text: impl Into<String>, error: bool) -> Notice {
    Notice {
        room: room.map(str::to_owned),
        text: text.into(),
        error,
    }
}

/// Tells `peer` why something was refused.
async fn refuse(peer: &Peer, room: Option<&str>, text: impl Into<String>) {
    let _ = NOTICE.send(peer, &notice(room, text, true)).await;
}

/// What the presence handler and the message handlers tell the publisher.
enum Change {
    Presence(Presence),
    Directory,
}

/// The state the handlers share: the publisher's queue and the octets of held files.
#[derive(Clone)]
struct Shared {
    changes: mpsc::UnboundedSender<Change>,
    held: Arc<AtomicUsize>,
}

impl Shared {
    fn changed(&self) {
        let _ = self.changes.send(Change::Directory);
    }
}

/// The chat server before it starts: [`ChatServer::builder`] takes the listeners (and any
/// further settings) and [`ChatServer::start`] starts it.
pub struct ChatServer {
    builder: ServerBuilder,
    shared: Shared,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl ChatServer {
    /// The chat on `builder`: its protocol, handlers and limits. `builder` brings the
    /// listeners; `security` is the server's key, if it has one for pages to pin; `origins`,
    /// the pages that may open its WebSocket (`None`: any).
    pub fn new(
        builder: ServerBuilder,
        security: Option<truflux::security::ServerKey>,
        origins: Option<Vec<String>>,
    ) -> ChatServer {
        let (tx, changes) = mpsc::unbounded_channel();
        let shared = Shared {
            changes: tx,
            held: Arc::new(AtomicUsize::new(0)),
        };
        let config = config(security).allowed_origins(origins);
        let builder = handlers(builder.config(config), &shared);
        ChatServer {
            builder,
            shared,
            changes,
        }
    }

    /// The server builder, to add listeners or settings before [`ChatServer::start`].
    pub fn builder(mut self, f: impl FnOnce(ServerBuilder) -> ServerBuilder) -> ChatServer {
        self.builder = f(self.builder);
        self
    }

    /// Starts the server and the task that tells everyone who is where.
    pub async fn start(self) -> Result<Server, truflux::Error> {
        let server = self.builder.start().await?;
        tokio::spawn(publish(server.clone(), self.changes));
        Ok(server)
    }
}

/// The limits of the chat (see the `chat` example's documentation for the flood policy).
fn config(key: Option<truflux::security::ServerKey>) -> truflux::ServerConfig {
    use truflux::{ConnectionConfig, HistoryLimit, RateLimit, RatePolicy, RoomConfig, ServerConfig};
    let mut security = truflux::security::SecurityConfig::default();
    if let Some(key) = key {
        security = security.server_key(key);
    }
    let flood = RateLimit::new(RatePolicy::Slow)
        .messages(10, 30)
        .bytes(4 << 20, 8 << 20);
    let connection = ConnectionConfig::default()
        .max_payload(1 << 20)
        .security(security)
        .rate_limit(Some(flood));
    let history = HistoryLimit::default().messages(50).bytes(64 << 10);
    let rooms = RoomConfig::default()
        .max_rooms_per_peer(MAX_ROOMS)
        .max_name(4 * MAX_ROOM)
        .history(Some(history));
    ServerConfig::default().connection(connection).rooms(rooms)
}

fn registry(shared: &Shared) -> Registry {
    let (on_nick, on_join, on_leave) = (shared.clone(), shared.clone(), shared.clone());
    Registry::builder()
        .on(NICK, move |peer, new: String| rename(peer, new, on_nick.clone()))
        .on(JOIN, move |peer, room: String| join(peer, room, on_join.clone()))
        .on(LEAVE, move |peer, room: String| {
            leave(peer, room, on_leave.clone())
        })
        .on(SAY, say)
        .on(SHARE, share)
        .message(YOU)
        .message(JOINED)
        .message(LEFT)
        .message(LINE)
        .message(FILE)
        .message(PRESENCE)
        .message(DIRECTORY)
        .message(NOTICE)
        .build()
        .expect("chat messages have distinct names and ids")
}

fn handlers(builder: ServerBuilder, shared: &Shared) -> ServerBuilder {
    let (on_presence, on_connect, on_leave, on_file) =
        (shared.clone(), shared.clone(), shared.clone(), shared.clone());
    builder
        .protocol(registry(shared))
        .on_presence(move |change| {
            let _ = on_presence.changes.send(Change::Presence(change.clone()));
        })
        .on_connect(move |peer| {
            let shared = on_connect.clone();
            async move {
                let name = nick(&peer);
                peer.set_label(Some(name.clone()));
                let you = Person {
                    id: hex_id(peer.id()),
                    nick: name.clone(),
                };
                let _ = YOU.send(&peer, &you).await;
                // Every node's peers when the server is part of a cluster.
                let online = match peer.server() {
                    Some(server) => server
                        .cluster_connections()
                        .await
                        .unwrap_or(server.num_connections()),
                    None => 0,
                };
                let welcome = format!("welcome to the chat ({online} online)");
                let _ = NOTICE.send(&peer, &notice(None, welcome, false)).await;
                shared.changed();
            }
        })
        .on_disconnect(move |_, _| on_leave.changed())
        .on_file(move |peer, offer| {
            tokio::spawn(receive_shared(peer.clone(), offer, on_file.clone()));
        })
}

async fn rename(peer: Peer, new: String, shared: Shared) {
    let new = match check_nick(&new) {
        Ok(new) => new,
        Err(why) => return refuse(&peer, None, why).await,
    };
    let old = nick(&peer);
    peer.session().insert(Nick(new.clone()));
    peer.set_label(Some(new.clone()));
    let _ = YOU
        .send(
            &peer,
            &Person {
                id: hex_id(peer.id()),
                nick: new.clone(),
            },
        )
        .await;
    if let Some(server) = peer.server().filter(|_| old != new) {
        for room in peer.rooms() {
            let text = format!("{old} is now {new}");
            let _ = NOTICE
                .to(&server, room.as_str())
                .broadcast(&notice(Some(&room), text, false));
        }
    }
    shared.changed();
}

async fn join(peer: Peer, room: String, shared: Shared) {
    let room = match check_room(&room) {
        Ok(room) => room,
        Err(why) => return refuse(&peer, None, why).await,
    };
    let rooms = peer.rooms();
    if rooms.contains(&room) {
        let _ = JOINED.send(&peer, &room).await;
        return;
    }
    if rooms.len() >= MAX_ROOMS {
        return refuse(
            &peer,
            None,
            format!("you are in {MAX_ROOMS} rooms already: leave one first"),
        )
        .await;
    }
    // The acknowledgement goes first: the room's history follows it.
    let _ = JOINED.send(&peer, &room).await;
    if let Err(error) = peer.join(&room).await {
        let _ = LEFT.send(&peer, &room).await;
        refuse(&peer, None, format!("cannot join #{room}: {error}")).await;
    }
    shared.changed();
}

async fn leave(peer: Peer, room: String, shared: Shared) {
    let room = room.trim().trim_start_matches('#').to_owned();
    if peer.leave(&room) {
        let _ = LEFT.send(&peer, &room).await;
        shared.changed();
    } else {
        refuse(&peer, None, format!("you are not in #{room}")).await;
    }
}

async fn say(peer: Peer, say: Say) {
    if say.text.trim().is_empty() {
        return;
    }
    if say.text.chars().count() > MAX_TEXT {
        let why = format!("a message is at most {MAX_TEXT} characters");
        return refuse(&peer, Some(&say.room), why).await;
    }
    if !peer.rooms().contains(&say.room) {
        let why = format!("join #{} to talk there", say.room);
        return refuse(&peer, Some(&say.room), why).await;
    }
    if let Some(server) = peer.server() {
        let line = Line {
            id: line_id(),
            room: say.room.clone(),
            from: nick(&peer),
            text: say.text,
        };
        let _ = LINE.to(&server, say.room.as_str()).broadcast(&line);
    }
}

async fn share(peer: Peer, room: String) {
    if !peer.rooms().contains(&room) {
        return refuse(&peer, Some(&room), format!("join #{room} to share files there")).await;
    }
    let shares = match peer.session().get::<Shares>() {
        Some(shares) => shares,
        None => {
            let shares = Shares::default();
            peer.session().insert(shares.clone());
            shares
        }
    };
    let mut queue = shares.0.lock().unwrap_or_else(|p| p.into_inner());
    queue.push_back(room);
    queue.truncate(8);
}

/// Tells everyone about each change, one change after the other (so the last word is always
/// the current state): who joined or left goes to the room, who is where to everyone.
async fn publish(server: Server, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = changes.try_recv() {
            batch.push(more);
        }
        for change in &batch {
            if let Change::Presence(presence) = change {
                tell_room(&server, presence).await;
            }
        }
        let _ = DIRECTORY.broadcast(&server, &directory(&server).await, &[]);
    }
}

/// A presence note to each member of the room, one by one: room broadcasts are remembered in
/// the room's history, and a late joiner must not see old arrivals as news.
async fn tell_room(server: &Server, presence: &Presence) {
    let (room, member, joined) = match presence {
        Presence::Joined { room, member, .. } => (room, member, true),
        Presence::Left { room, member, .. } => (room, member, false),
        _ => return,
    };
    let note = PresenceNote {
        room: room.clone(),
        nick: label(member),
        joined,
    };
    let Ok(message) = PRESENCE.encode(&note) else {
        return;
    };
    for other in server.room_members(room).await.unwrap_or_default() {
        if let Some(peer) = server.peer(other.id) {
            let _ = peer.try_send(message.clone());
        }
    }
}

async fn directory(server: &Server) -> Directory {
    // With a cluster, rooms and their members are every node's; people in no room are this
    // node's alone.
    let mut rooms = Vec::new();
    let mut everyone = std::collections::BTreeMap::new();
    for name in server.rooms().await.unwrap_or_default() {
        let members = server.room_members(&name).await.unwrap_or_default();
        let members: Vec<Person> = members
            .iter()
            .map(|m| Person {
                id: hex_id(m.id),
                nick: label(m),
            })
            .collect();
        for person in &members {
            everyone.insert(person.id.clone(), person.nick.clone());
        }
        rooms.push(RoomInfo { name, members });
    }
    for peer in server.peers() {
        everyone.insert(hex_id(peer.id()), nick(&peer));
    }
    let mut people: Vec<Person> = everyone
        .into_iter()
        .map(|(id, nick)| Person { id, nick })
        .collect();
    people.sort_by(|a, b| a.nick.cmp(&b.nick));
    let online = server.cluster_connections().await.unwrap_or(people.len());
    Directory {
        online: online as u64,
        people,
        rooms,
    }
}

/// A new line id: this server run's and a sequence number.
fn line_id() -> String {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    format!("{run:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Octets of a shared file counted against [`MAX_HELD`] while it is held.
struct Held {
    held: Arc<AtomicUsize>,
    size: usize,
}

impl Held {
    fn take(held: &Arc<AtomicUsize>, size: usize) -> Option<Held> {
        let before = held.fetch_add(size, Ordering::SeqCst);
        let guard = Held {
            held: held.clone(),
            size,
        };
        (before + size <= MAX_HELD).then_some(guard)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.size, Ordering::SeqCst);
    }
}

/// An in-memory destination for an accepted offer.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Receives a file someone shares (the room named by their last `share`), then offers it to
/// the room's other members.
async fn receive_shared(peer: Peer, offer: FileOffer, shared: Shared) {
    let room = peer
        .session()
        .get::<Shares>()
        .and_then(|s| s.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front());
    let Some(room) = room else {
        return offer.decline("say which room the file is for (share) before offering it");
    };
    let size = match offer.size() {
        Some(size) if size <= MAX_FILE => size,
        _ => {
            let limit = human_size(MAX_FILE);
            refuse(
                &peer,
                Some(&room),
                format!("files of at most {limit} can be shared"),
            )
            .await;
            return offer.decline("too big");
        }
    };
    let Some(held) = Held::take(&shared.held, size as usize) else {
        refuse(
            &peer,
            Some(&room),
            "the server holds too many files right now: try again later",
        )
        .await;
        return offer.decline("the server is full");
    };
    let name = offer.safe_name().unwrap_or_else(|| "file".into());
    let buffer = Collect::default();
    let received = match offer.accept_writer(buffer.clone()).await {
        Ok(received) => received,
        Err(_) => return,
    };
    if received.finished().await.is_err() {
        return;
    }
    let content = Bytes::from(std::mem::take(
        &mut *buffer.0.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    let note = FileNote {
        room: room.clone(),
        from: nick(&peer),
        name,
        size,
    };
    let offered = offer_to_room(&peer, note, content, Arc::new(held)).await;
    let text = format!("shared with {offered} other(s) in #{room}");
    let _ = NOTICE.send(&peer, &notice(Some(&room), text, false)).await;
}

/// Offers `content` to every member of the room but the sender; the number of offers made.
async fn offer_to_room(sender: &Peer, note: FileNote, content: Bytes, held: Arc<Held>) -> usize {
    let Some(server) = sender.server() else { return 0 };
    let mut offered = 0;
    for member in server.room_members(&note.room).await.unwrap_or_default() {
        let Some(peer) = server.peer(member.id).filter(|p| p.id() != sender.id()) else {
            continue;
        };
        if FILE.send(&peer, &note).await.is_err() {
            continue;
        }
        let source = std::io::Cursor::new(content.clone());
        let Ok(sending) = peer.send_file_from(source, &note.name, Some(note.size)).await else {
            continue;
        };
        offered += 1;
        let held = held.clone();
        tokio::spawn(async move {
            let mut updates = sending.updates();
            let decided = tokio::time::timeout(OFFER_TIMEOUT, async {
                use futures_util::StreamExt;
                while let Some(status) = updates.next().await {
                    if status != FileStatus::Offered {
                        break;
                    }
                }
            });
            if decided.await.is_err() {
                sending.cancel();
            }
            let _ = sending.finished().await;
            drop(held);
        });
    }
    offered
}

/// Starts a chat server on `builder`'s listeners, without a key (for the messenger's own
/// server and tests).
pub async fn serve(builder: ServerBuilder) -> Result<Server, truflux::Error> {
    ChatServer::new(builder, None, None).start().await
}
