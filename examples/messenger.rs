//! The chat's terminal client (and a chat server of its own, without the web page).
//!
//! ```sh
//! cargo run --example messenger -- client 127.0.0.1:7878 [--nick NAME] [--room ROOM] [--pin FINGERPRINT]
//! cargo run --example messenger -- client ws://127.0.0.1:7879/chat
//! cargo run --features tls --example messenger -- client tls://localhost:7878 --ca ca.pem  # or wss://
//! cargo run --example messenger -- server 127.0.0.1:7878
//! ```
//!
//! Lines typed go to the current room (the one joined last, or switched to with `/join`).
//! Commands:
//!
//! | command | what |
//! |---|---|
//! | `/join ROOM` | joins a room (or switches to it) |
//! | `/leave [ROOM]` | leaves a room, the current one by default |
//! | `/nick NAME` | renames you |
//! | `/who [ROOM]` | who is in a room (the current one by default), and who is online |
//! | `/rooms` | every room, with how many are in it |
//! | `/send FILE` | shares a file with the current room |
//! | `/accept`, `/decline` | takes or refuses the oldest file offered to you (saved in the current directory) |
//! | `/quit` | leaves |
//!
//! With `--pin` the client accepts only the server whose key has that fingerprint (the chat
//! server prints it) and encrypts both directions. The client reconnects by itself; when the
//! server no longer knows its session (it restarted), it starts a new one, rejoins its rooms and
//! says "reconnected (messages may have been missed)".

#[path = "support/chat.rs"]
mod chat;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use truflux::file::FileOffer;
use truflux::{Client, Code, Peer};
use truflux_msg::Registry;

use chat::{Directory, FileNote, Line, Notice, Person, PresenceNote, Say};

/// What the terminal knows: who it is, where it is, what it was offered.
#[derive(Default)]
struct Term {
    nick: Option<String>,
    rooms: BTreeSet<String>,
    current: Option<String>,
    directory: Directory,
    notes: VecDeque<FileNote>,
    offers: VecDeque<(FileNote, FileOffer)>,
    seen: VecDeque<String>,
    /// Whether the connection is up; lines typed while it is not wait in `pending`.
    online: bool,
    pending: VecDeque<Say>,
    /// A renewal is sending the nickname, rooms and pending lines.
    renewing: bool,
    /// Told when the server answers a join or a leave (or refuses something).
    answered: Arc<tokio::sync::Notify>,
}

impl Term {
    /// Whether the line with `id` is new: a room's history comes again when it is rejoined.
    fn fresh(&mut self, id: &str) -> bool {
        if self.seen.iter().any(|seen| seen == id) {
            return false;
        }
        if self.seen.len() == 1000 {
            self.seen.pop_front();
        }
        self.seen.push_back(id.to_owned());
        true
    }
}

type State = Arc<Mutex<Term>>;

fn lock(state: &State) -> std::sync::MutexGuard<'_, Term> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A line the person typed.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Say(String),
    Join(String),
    Leave(Option<String>),
    Nick(String),
    Who(Option<String>),
    Rooms,
    Send(String),
    Accept,
    Decline,
    Help,
    Quit,
    Nothing,
    Unknown(String),
}

fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(command) = line.strip_prefix('/') else {
        return if line.trim().is_empty() {
            Command::Nothing
        } else {
            Command::Say(line.to_owned())
        };
    };
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    let arg = (!rest.is_empty()).then(|| rest.to_owned());
    match word {
        "join" => Command::Join(rest.to_owned()),
        "leave" | "part" => Command::Leave(arg),
        "nick" => Command::Nick(rest.to_owned()),
        "who" => Command::Who(arg),
        "rooms" => Command::Rooms,
        "send" => Command::Send(rest.to_owned()),
        "accept" => Command::Accept,
        "decline" => Command::Decline,
        "help" => Command::Help,
        "quit" | "exit" => Command::Quit,
        other => Command::Unknown(other.to_owned()),
    }
}

const HELP: &str = "commands: /join ROOM, /leave [ROOM], /nick NAME, /who [ROOM], /rooms, \
/send FILE, /accept, /decline, /quit; other lines go to the current room";

fn registry(state: &State) -> Registry {
    let (you, joined, left, directory, note) = (
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
        state.clone(),
    );
    let (seen, refused) = (state.clone(), state.clone());
    Registry::builder()
        .on(chat::YOU, move |_, me: Person| {
            lock(&you).nick = Some(me.nick.clone());
            println!("* you are {}", me.nick);
            std::future::ready(())
        })
        .on(chat::JOINED, move |_, room: String| {
            let mut term = lock(&joined);
            term.rooms.insert(room.clone());
            term.current = Some(room.clone());
            println!("* you are in #{room}: lines you type go there");
            term.answered.notify_waiters();
            std::future::ready(())
        })
        .on(chat::LEFT, move |_, room: String| {
            let mut term = lock(&left);
            term.rooms.remove(&room);
            if term.current.as_ref() == Some(&room) {
                term.current = term.rooms.iter().next().cloned();
            }
            match &term.current {
                Some(now) => println!("* you left #{room}; now in #{now}"),
                None => println!("* you left #{room}; /join a room to talk"),
            }
            term.answered.notify_waiters();
            std::future::ready(())
        })
        .on(chat::LINE, move |_, line: Line| {
            if lock(&seen).fresh(&line.id) {
                println!("[{}] <{}> {}", line.room, line.from, line.text);
            }
            std::future::ready(())
        })
        .on(chat::NOTICE, move |_, notice: Notice| {
            if notice.error {
                lock(&refused).answered.notify_waiters();
            }
            let mark = if notice.error { "!" } else { "*" };
            match notice.room {
                Some(room) => println!("[{room}] {mark} {}", notice.text),
                None => println!("{mark} {}", notice.text),
            }
            std::future::ready(())
        })
        .on(chat::PRESENCE, |_, p: PresenceNote| {
            let what = if p.joined { "joined" } else { "left" };
            println!("[{}] * {} {what}", p.room, p.nick);
            std::future::ready(())
        })
        .on(chat::DIRECTORY, move |_, d: Directory| {
            lock(&directory).directory = d;
            std::future::ready(())
        })
        .on(chat::FILE, move |_, n: FileNote| {
            lock(&note).notes.push_back(n);
            std::future::ready(())
        })
        .message(chat::NICK)
        .message(chat::JOIN)
        .message(chat::LEAVE)
        .message(chat::SAY)
        .message(chat::SHARE)
        .build()
        .expect("chat messages have distinct names and ids")
}

/// A file the server offers: announced by the `file` note just before it.
fn offered(state: &State, offer: FileOffer) {
    let mut term = lock(state);
    let note = term.notes.pop_front().unwrap_or(FileNote {
        room: String::new(),
        from: "someone".into(),
        name: offer.name().to_owned(),
        size: offer.size().unwrap_or(0),
    });
    println!(
        "[{}] * {} offers {} ({}): /accept or /decline",
        note.room,
        note.from,
        note.name,
        chat::human_size(note.size)
    );
    term.offers.push_back((note, offer));
}

/// After a restart of the server: the same nickname and rooms on the new session.
fn renewed(state: &State, peer: &Peer) {
    println!("* reconnected (messages may have been missed)");
    let (nick, rooms) = {
        let mut term = lock(state);
        term.renewing = true;
        (term.nick.clone(), term.rooms.clone())
    };
    let (peer, state) = (peer.clone(), state.clone());
    tokio::spawn(async move {
        if let Some(nick) = nick {
            let _ = chat::NICK.send(&peer, &nick).await;
        }
        for room in rooms {
            let _ = chat::JOIN.send(&peer, &room).await;
        }
        flush(&peer, &state).await;
    });
}

/// Back on a resumed session: what was typed meanwhile goes out (after a renewal, the
/// renewal's task sends it once the rooms are joined again).
fn resumed(state: &State, peer: &Peer, attempts: u32) {
    println!("* reconnected after {attempts} attempt(s)");
    if std::mem::take(&mut lock(state).renewing) {
        return;
    }
    let (peer, state) = (peer.clone(), state.clone());
    tokio::spawn(async move { flush(&peer, &state).await });
}

/// Sends the lines typed while the connection was down, in order, then goes online.
async fn flush(peer: &Peer, state: &State) {
    loop {
        let say = {
            let mut term = lock(state);
            match term.pending.pop_front() {
                Some(say) => say,
                None => {
                    term.online = true;
                    return;
                }
            }
        };
        let _ = chat::SAY.send(peer, &say).await;
    }
}

async fn connect(addr: &str, state: &State, args: &Args) -> Result<Client, Box<dyn std::error::Error>> {
    let pin = args.pin.as_deref();
    let mut connection = truflux::ConnectionConfig::default();
    if let Some(pin) = pin {
        let fingerprint: truflux::security::Fingerprint = pin.parse()?;
        let security = truflux::security::SecurityConfig::default()
            .pin(fingerprint)
            .required(true);
        connection = connection.security(security);
    }
    let reconnect = truflux::Reconnect::default().renew(true).max_attempts(None);
    let config = truflux::ClientConfig::default()
        .connection(connection)
        .reconnect(Some(reconnect));
    let (on_file, on_renew, on_resume, on_lost) =
        (state.clone(), state.clone(), state.clone(), state.clone());
    let builder = Client::builder()
        .protocol(registry(state))
        .config(config)
        .on_disconnect(move |info| {
            lock(&on_lost).online = false;
            println!("* connection lost ({}); reconnecting", info.code.name());
        })
        .on_renew(move |peer| renewed(&on_renew, peer))
        .on_reconnect(move |peer, attempts| resumed(&on_resume, peer, attempts))
        .on_close(|info| println!("* disconnected: {}", describe(info)))
        .on_file(move |offer| offered(&on_file, offer));
    if addr.starts_with("tls://") || addr.starts_with("wss://") {
        return connect_tls(builder, addr, args.ca.as_deref()).await;
    }
    let client = if addr.starts_with("ws://") {
        builder.connect_ws(addr).await?
    } else {
        builder.connect(addr).await?
    };
    Ok(client)
}

/// `tls://HOST:PORT` or `wss://…`, trusting the certificates in `--ca` (feature `tls`).
#[cfg(feature = "tls")]
async fn connect_tls(
    builder: truflux::ClientBuilder,
    addr: &str,
    ca: Option<&str>,
) -> Result<Client, Box<dyn std::error::Error>> {
    use truflux::tls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let ca = ca.ok_or("a tls:// or wss:// server needs --ca FILE (the certificates to trust)")?;
    let mut roots = truflux::tls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots.add(cert.map_err(|e| format!("{ca}: {e}"))?)?;
    }
    let builder = builder.tls(truflux::tls::client_config(roots)?);
    let Some(host_port) = addr.strip_prefix("tls://") else {
        return Ok(builder.connect_ws(addr).await?);
    };
    let host = host_port.rsplit_once(':').map_or(host_port, |(host, _)| host);
    Ok(builder.connect_tls(host_port, host).await?)
}

#[cfg(not(feature = "tls"))]
async fn connect_tls(
    _: truflux::ClientBuilder,
    _: &str,
    _: Option<&str>,
) -> Result<Client, Box<dyn std::error::Error>> {
    Err("tls:// and wss:// need TLS: cargo run --features tls --example messenger".into())
}

fn describe(info: &truflux::CloseInfo) -> String {
    if info.reason.is_empty() {
        info.code.name().to_string()
    } else {
        format!("{} ({})", info.reason, info.code.name())
    }
}

/// Carries out one command; false to quit.
async fn run(client: &Client, state: &State, command: Command) -> Result<bool, truflux::Error> {
    let current = lock(state).current.clone();
    match command {
        Command::Quit => return Ok(false),
        Command::Nothing => {}
        Command::Help => println!("{HELP}"),
        Command::Unknown(word) => println!("! unknown command /{word}; {HELP}"),
        Command::Say(text) => match current {
            Some(room) => say(client, state, Say { room, text }).await?,
            None => println!("! join a room first: /join ROOM"),
        },
        Command::Join(room) => match chat::check_room(&room) {
            Ok(room) if lock(state).rooms.contains(&room) => {
                lock(state).current = Some(room.clone());
                println!("* now talking in #{room}");
            }
            Ok(room) => answered(state, chat::JOIN.send(client, &room)).await?,
            Err(why) => println!("! {why}"),
        },
        Command::Leave(room) => match room.or(current) {
            Some(room) => answered(state, chat::LEAVE.send(client, &room)).await?,
            None => println!("! you are in no room"),
        },
        Command::Nick(nick) => match chat::check_nick(&nick) {
            Ok(nick) => chat::NICK.send(client, &nick).await?,
            Err(why) => println!("! {why}"),
        },
        Command::Who(room) => who(state, room),
        Command::Rooms => rooms(state),
        Command::Send(path) => send(client, state, &path).await?,
        Command::Accept => accept(state).await,
        Command::Decline => match take_offer(state) {
            Some((note, offer)) => {
                offer.decline("declined");
                println!("* declined {}", note.name);
            }
            None => println!("! no file is offered to you"),
        },
    }
    Ok(true)
}

/// Sends a line now, or once the connection is back (and the rooms are joined again).
async fn say(client: &Client, state: &State, say: Say) -> Result<(), truflux::Error> {
    {
        let mut term = lock(state);
        if !term.online {
            term.pending.push_back(say);
            return Ok(());
        }
    }
    chat::SAY.send(client, &say).await
}

/// Sends with `send` and waits for the server's answer (joined, left, or a refusal), at most
/// 5 s: lines typed next go to the room it made current.
async fn answered(
    state: &State,
    send: impl std::future::Future<Output = Result<(), truflux::Error>>,
) -> Result<(), truflux::Error> {
    let notify = lock(state).answered.clone();
    let answer = notify.notified();
    tokio::pin!(answer);
    answer.as_mut().enable();
    send.await?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
    Ok(())
}

fn who(state: &State, room: Option<String>) {
    let term = lock(state);
    if let Some(room) = room.or_else(|| term.current.clone()) {
        let room = room.trim_start_matches('#');
        match term.directory.rooms.iter().find(|r| r.name == room) {
            Some(info) => {
                let people: Vec<&str> = info.members.iter().map(|p| p.nick.as_str()).collect();
                println!("* in #{room}: {}", people.join(", "));
            }
            None => println!("* nobody is in #{room}"),
        }
    }
    let everyone: Vec<&str> = term.directory.people.iter().map(|p| p.nick.as_str()).collect();
    println!("* {} online: {}", term.directory.online, everyone.join(", "));
}

fn rooms(state: &State) {
    let term = lock(state);
    if term.directory.rooms.is_empty() {
        return println!("* no rooms yet: /join ROOM makes one");
    }
    for room in &term.directory.rooms {
        let mark = if term.rooms.contains(&room.name) {
            " (you are in it)"
        } else {
            ""
        };
        println!("* #{}: {} in it{mark}", room.name, room.members.len());
    }
}

async fn send(client: &Client, state: &State, path: &str) -> Result<(), truflux::Error> {
    let Some(room) = lock(state).current.clone() else {
        println!("! join a room first: /join ROOM");
        return Ok(());
    };
    if path.is_empty() {
        println!("! which file? /send FILE");
        return Ok(());
    }
    chat::SHARE.send(client, &room).await?;
    let sending = match client.peer().send_file(path).await {
        Ok(sending) => sending,
        Err(error) => {
            println!("! cannot send {path}: {error}");
            return Ok(());
        }
    };
    println!("* sending {path} to #{room}");
    let path = path.to_owned();
    tokio::spawn(async move {
        match sending.finished().await {
            Ok((size, _)) => println!("* {path} is on the server ({})", chat::human_size(size)),
            Err(error) => println!("! sending {path} failed: {error}"),
        }
    });
    Ok(())
}

fn take_offer(state: &State) -> Option<(FileNote, FileOffer)> {
    lock(state).offers.pop_front()
}

async fn accept(state: &State) {
    let Some((note, offer)) = take_offer(state) else {
        return println!("! no file is offered to you");
    };
    let receiving = match offer.accept_into(".").await {
        Ok(receiving) => receiving,
        Err(error) => return println!("! cannot receive {}: {error}", note.name),
    };
    println!("* receiving {} ({})", note.name, chat::human_size(note.size));
    tokio::spawn(async move {
        match receiving.finished().await {
            Ok((size, sha256)) => {
                let path = receiving.path().unwrap_or_default();
                let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
                println!(
                    "* saved {} ({}, SHA-256 {hex})",
                    path.display(),
                    chat::human_size(size)
                );
            }
            Err(error) => println!("! receiving {} failed: {error}", note.name),
        }
    });
}

struct Args {
    addr: String,
    nick: Option<String>,
    room: String,
    pin: Option<String>,
    ca: Option<String>,
}

fn client_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        addr: "127.0.0.1:7878".into(),
        nick: None,
        room: "lobby".into(),
        pin: None,
        ca: None,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--nick" => parsed.nick = Some(value()?),
            "--room" => parsed.room = value()?,
            "--pin" => parsed.pin = Some(value()?),
            "--ca" => parsed.ca = Some(value()?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            addr => parsed.addr = addr.to_owned(),
        }
    }
    Ok(parsed)
}

async fn terminal(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncBufReadExt;

    let state = State::default();
    lock(&state).online = true;
    let client = connect(&args.addr, &state, &args).await?;
    println!("* connected to {}; /help for commands", args.addr);
    if let Some(nick) = &args.nick {
        chat::NICK.send(&client, nick).await?;
    }
    answered(&state, chat::JOIN.send(&client, &args.room)).await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = client.peer().closed() => return Ok(()),
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                match run(&client, &state, parse(&line)).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => println!("! {error}"),
                }
            }
        }
    }
    client.peer().close(Code::NORMAL, "quit").await;
    Ok(())
}

#[tokio::main]
async fn main() {
    // Errors in words (a `main` returning `Err` would print its debug form).
    if let Err(error) = run_main().await {
        eprintln!("messenger: {error}");
        std::process::exit(1);
    }
}

async fn run_main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    match mode.as_str() {
        "server" => {
            let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
            let server = chat::serve(truflux::Server::builder().tcp(addr)).await?;
            println!(
                "chat server on {} (TCP); stop with Ctrl-C",
                server.local_addrs()[0]
            );
            tokio::signal::ctrl_c().await?;
            server.close(Code::GOING_AWAY, "server shutting down").await;
            Ok(())
        }
        "client" => match client_args(args) {
            Ok(args) => terminal(args).await,
            Err(problem) => usage(&problem),
        },
        _ => usage(""),
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!(
        "usage: messenger client [ADDR | ws://HOST:PORT/chat | tls://HOST:PORT | wss://HOST:PORT/chat] \
         [--nick NAME] [--room ROOM] [--pin FINGERPRINT] [--ca FILE]"
    );
    eprintln!("       messenger server [ADDR]");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::{parse, Command};

    #[test]
    fn commands_parse() {
        assert_eq!(parse("/join  rust "), Command::Join("rust".into()));
        assert_eq!(parse("/leave"), Command::Leave(None));
        assert_eq!(parse("/who lobby"), Command::Who(Some("lobby".into())));
        assert_eq!(parse("hello /join"), Command::Say("hello /join".into()));
        assert_eq!(parse("/frob"), Command::Unknown("frob".into()));
    }
}
