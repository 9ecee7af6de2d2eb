//! The key exchange: its messages and the state machine of each role (PROTOCOL.md §9.1–§9.2).
//!
//! Security frames have kind `SECURITY` (0x06); the id field is the message type. The client
//! offers one ephemeral public value per suite it supports; the server validates the value of
//! the first suite of its own list that the client offered, answers with its public value, its
//! long-term key and signature (if it has one) and a finished MAC, and the client confirms with
//! its own. The transcript (both hellos, the offer and the reply) is hashed into every key, so a
//! changed offer (a downgrade) fails the finished MACs. Pure: no IO, no clock, no tasks; the
//! expensive steps ([`Handshake::offer`], [`Handshake::on_message`] for `KEX_INIT` and
//! `KEX_REPLY`) are meant to run off the runtime's threads.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::identity::{self, Fingerprint, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use super::kex::{self, KeyShare};
use super::record::{Opener, Sealer};
use super::schedule::{derive, finished, hash, verify_finished, Secret};
use super::{random, SecurityConfig, SecurityError, SecurityEvent, Suite};
use crate::error::Code;
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};

/// Client → server: the offer. `client random (32) | count (u8) | count × (suite (u8) |
/// length (u16) | public value)`.
pub const KEX_INIT: u32 = 1;
/// Server → client: `server random (32) | suite (u8) | length (u16) | public value |
/// key length (u16) | server key | signature length (u16) | signature | server finished (32)`.
pub const KEX_REPLY: u32 = 2;
/// Server → client: no common suite; payload as a close frame's (code, reason).
pub const KEX_FAIL: u32 = 3;
/// Client → server: `client finished (32)`.
pub const FINISHED: u32 = 4;
/// Server → client, before keys: please start a key exchange (empty).
pub const START: u32 = 5;
/// Protected: the sender's direction is secure from the next frame on (empty).
pub const SEC_ON: u32 = 8;
/// Protected: the sender's direction is plain from the next frame on (empty).
pub const SEC_OFF: u32 = 9;
/// Asks the peer to turn the direction it sends on (`01`) or off (`00`).
pub const REQUEST: u32 = 10;
/// Protected: the sender's next record uses the next keys (empty).
pub const REKEY: u32 = 11;

/// Most suites an offer may carry.
const MAX_OFFER: usize = 8;

/// A security frame of type `id`.
pub fn frame(id: u32, payload: Bytes) -> Frame {
    Frame {
        kind: Kind::Security,
        id,
        tag: None,
        payload,
    }
}

/// Which side of the handshake this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Offers suites.
    Client,
    /// Chooses a suite.
    Server,
}

/// What a client requires of the server's key.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    /// Fingerprints accepted; empty: any key, or none (an anonymous exchange).
    pub fingerprints: Vec<Fingerprint>,
}

enum State {
    Idle,
    Requested,
    AwaitReply {
        shares: Vec<(Suite, KeyShare)>,
        offer: Bytes,
    },
    AwaitFinished {
        suite: Suite,
        client_finished: Secret,
        th2: [u8; 32],
        opener: Box<Opener>,
        resumption: Secret,
    },
    Done(Suite),
    Failed,
}

/// What the handshake produced once keys exist.
pub struct Keys {
    /// The session's resume secret, if it has none yet (PROTOCOL.md §9.2).
    pub resumption: Secret,
    /// The transcript hash resume binders are computed over.
    pub th2: [u8; 32],
    /// The server's key, when it sent one (client side).
    pub server_key: Option<Fingerprint>,
    /// Whether the server's key is one the client pins (client side).
    pub authenticated: bool,
}

/// What a handshake step asks the connection to do.
#[derive(Default)]
pub struct Step {
    /// A security frame to send, in the clear (it comes before this side's keys).
    pub send: Option<Frame>,
    /// Keys for the direction we send: installed right after `send` goes out.
    pub tx: Option<Sealer>,
    /// Keys for the direction we receive: installed before the next frame is read.
    pub rx: Option<Opener>,
    /// The exchange completed on this side.
    pub keys: Option<Keys>,
    /// What to tell the application.
    pub event: Option<SecurityEvent>,
}

/// One connection's key exchange.
pub struct Handshake {
    role: Role,
    config: Arc<SecurityConfig>,
    pins: Pins,
    hellos: Option<Vec<u8>>,
    state: State,
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Handshake {
    /// A key exchange that has not started. A client checks the server's key against `pins`.
    pub fn new(role: Role, config: Arc<SecurityConfig>, pins: Pins) -> Handshake {
        Handshake {
            role,
            config,
            pins,
            hellos: None,
            state: State::Idle,
        }
    }

    /// The first hello of each side begin the transcript; set before the reply is made or read.
    pub fn set_hellos(&mut self, client: &Hello, server: &Hello) {
        let mut hellos = Vec::new();
        put_len_prefixed(&mut hellos, &client.to_frame().payload);
        put_len_prefixed(&mut hellos, &server.to_frame().payload);
        self.hellos = Some(hellos);
    }

    /// The role of this side.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The negotiated suite, once done.
    pub fn suite(&self) -> Option<Suite> {
        match self.state {
            State::Done(suite) => Some(suite),
            _ => None,
        }
    }

    /// Whether nothing has happened yet.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Whether the exchange ended, one way or the other.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Done(_) | State::Failed)
    }

    /// A server's request for an offer (`START`), if nothing has started.
    pub fn request(&mut self) -> Option<Frame> {
        match (self.role, &self.state) {
            (Role::Server, State::Idle) => {
                self.state = State::Requested;
                Some(frame(START, Bytes::new()))
            }
            _ => None,
        }
    }

    /// A client's offer (`KEX_INIT`), if nothing has started: one fresh key share per
    /// configured suite. Expensive (a DH key pair costs an exponentiation).
    pub fn offer(&mut self) -> Result<Option<Frame>, SecurityError> {
        if self.role != Role::Client || !self.is_idle() {
            return Ok(None);
        }
        if self.config.suites.is_empty() {
            return Err(SecurityError::NoCommonSuite);
        }
        let mut client_random = [0u8; 32];
        random(&mut client_random);
        let mut payload = BytesMut::new();
        payload.put_slice(&client_random);
        let suites: Vec<Suite> = self.config.suites.iter().copied().take(MAX_OFFER).collect();
        payload.put_u8(suites.len() as u8);
        let mut shares = Vec::new();
        for suite in suites {
            let (share, public) = KeyShare::generate(suite);
            payload.put_u8(suite.id());
            payload.put_u16(public.len() as u16);
            payload.put_slice(&public);
            shares.push((suite, share));
        }
        let offer = payload.freeze();
        self.state = State::AwaitReply {
            shares,
            offer: offer.clone(),
        };
        Ok(Some(frame(KEX_INIT, offer)))
    }

    /// Handles a received security message of type `id` that belongs to the key exchange.
    pub fn on_message(&mut self, id: u32, payload: &[u8]) -> Result<Step, SecurityError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (self.role, id, state) {
            (Role::Client, START, State::Idle) => {
                self.state = State::Idle;
                let send = self.offer()?;
                Ok(Step {
                    send,
                    ..Step::default()
                })
            }
            (Role::Client, START, state @ State::AwaitReply { .. }) => {
                // Both sides started at once: our offer is on its way.
                self.state = state;
                Ok(Step::default())
            }
            (Role::Server, KEX_INIT, State::Idle | State::Requested) => self.on_offer(payload),
            (Role::Client, KEX_REPLY, State::AwaitReply { shares, offer }) => {
                self.on_reply(payload, &shares, &offer)
            }
            (Role::Client, KEX_FAIL, State::AwaitReply { .. }) => {
                let close = Close::parse(Kind::Security, payload)
                    .unwrap_or_else(|_| Close::new(Code::NO_COMMON_SUITE, "no common suite"));
                Ok(Step {
                    event: Some(SecurityEvent::FailSecure {
                        code: close.code,
                        reason: close.reason,
                    }),
                    ..Step::default()
                })
            }
            (Role::Server, FINISHED, state @ State::AwaitFinished { .. }) => self.on_finished(payload, state),
            _ => Err(SecurityError::Handshake("unexpected handshake message")),
        }
    }

    fn transcript(&self) -> Result<Vec<u8>, SecurityError> {
        self.hellos
            .clone()
            .ok_or(SecurityError::Handshake("key exchange before the hellos"))
    }

    fn on_offer(&mut self, payload: &[u8]) -> Result<Step, SecurityError> {
        let offered = parse_offer(payload)?;
        let chosen = self.config.suites.iter().find_map(|suite| {
            offered
                .iter()
                .find(|(s, _)| s == suite)
                .map(|(s, public)| (*s, *public))
        });
        let Some((suite, client_public)) = chosen else {
            let fail = Close::new(Code::NO_COMMON_SUITE, "no common security suite");
            return Ok(Step {
                send: Some(fail.to_frame(Kind::Security, KEX_FAIL)),
                event: Some(SecurityEvent::FailSecure {
                    code: fail.code,
                    reason: fail.reason,
                }),
                ..Step::default()
            });
        };
        // Refused before any work of ours: a canned offer costs the server a validation only.
        kex::validate_public(suite, client_public)?;
        let (share, server_public) = KeyShare::generate(suite);
        let shared = share.agree(client_public)?;
        let mut server_random = [0u8; 32];
        random(&mut server_random);
        let mut body = BytesMut::new();
        body.put_slice(&server_random);
        body.put_u8(suite.id());
        body.put_u16(server_public.len() as u16);
        body.put_slice(&server_public);
        let key = self.config.server_key.clone();
        match &key {
            Some(key) => {
                body.put_u16(PUBLIC_KEY_LEN as u16);
                body.put_slice(&key.public_key());
            }
            None => body.put_u16(0),
        }
        let mut transcript = self.transcript()?;
        put_len_prefixed(&mut transcript, payload);
        transcript.extend_from_slice(&body);
        let th = hash(&transcript);
        let secrets = derive(&shared, &th);
        let signature = key.map(|key| key.sign(&th));
        let signature: &[u8] = signature.as_ref().map_or(&[], |s| &s[..]);
        body.put_u16(signature.len() as u16);
        body.put_slice(signature);
        transcript.extend_from_slice(&(signature.len() as u16).to_be_bytes());
        transcript.extend_from_slice(signature);
        let server_finished = finished(&secrets.server_finished, &hash(&transcript));
        transcript.extend_from_slice(&server_finished);
        body.put_slice(&server_finished);
        self.state = State::AwaitFinished {
            suite,
            client_finished: secrets.client_finished,
            th2: hash(&transcript),
            opener: Box::new(Opener::new(suite, secrets.c2s)),
            resumption: secrets.resumption,
        };
        Ok(Step {
            send: Some(frame(KEX_REPLY, body.freeze())),
            tx: Some(Sealer::new(suite, secrets.s2c)),
            ..Step::default()
        })
    }

    fn on_finished(&mut self, payload: &[u8], state: State) -> Result<Step, SecurityError> {
        let State::AwaitFinished {
            suite,
            client_finished,
            th2,
            opener,
            resumption,
        } = state
        else {
            return Err(SecurityError::Handshake("unexpected handshake message"));
        };
        verify_finished(&client_finished, &th2, payload)?;
        self.state = State::Done(suite);
        Ok(Step {
            rx: Some(*opener),
            keys: Some(Keys {
                resumption,
                th2,
                server_key: None,
                authenticated: false,
            }),
            event: Some(SecurityEvent::Handshaked { suite }),
            ..Step::default()
        })
    }

    fn on_reply(
        &mut self,
        payload: &[u8],
        shares: &[(Suite, KeyShare)],
        offer: &[u8],
    ) -> Result<Step, SecurityError> {
        let reply = Reply::parse(payload)?;
        let (_, share) = shares
            .iter()
            .find(|(s, _)| *s == reply.suite)
            .ok_or(SecurityError::Handshake(
                "server chose a suite that was not offered",
            ))?;
        let shared = share.agree(reply.public)?;
        let mut transcript = self.transcript()?;
        put_len_prefixed(&mut transcript, offer);
        transcript.extend_from_slice(reply.body);
        let th = hash(&transcript);
        let secrets = derive(&shared, &th);
        let (server_key, authenticated) = self.check_server(&reply, &th)?;
        transcript.extend_from_slice(&(reply.signature.len() as u16).to_be_bytes());
        transcript.extend_from_slice(reply.signature);
        verify_finished(&secrets.server_finished, &hash(&transcript), reply.finished)?;
        transcript.extend_from_slice(reply.finished);
        let th2 = hash(&transcript);
        let client_finished = finished(&secrets.client_finished, &th2);
        self.state = State::Done(reply.suite);
        let suite = reply.suite;
        Ok(Step {
            send: Some(frame(FINISHED, Bytes::copy_from_slice(&client_finished))),
            tx: Some(Sealer::new(suite, secrets.c2s)),
            rx: Some(Opener::new(suite, secrets.s2c)),
            keys: Some(Keys {
                resumption: secrets.resumption,
                th2,
                server_key,
                authenticated,
            }),
            event: Some(SecurityEvent::Handshaked { suite }),
        })
    }

    /// The server's key and signature against the pins: a present signature must verify; with
    /// pins, the key must be one of them.
    fn check_server(
        &self,
        reply: &Reply<'_>,
        th: &[u8; 32],
    ) -> Result<(Option<Fingerprint>, bool), SecurityError> {
        let fingerprint = if reply.key.is_empty() {
            None
        } else {
            identity::verify(reply.key, th, reply.signature)?;
            Some(Fingerprint::of(reply.key))
        };
        if self.pins.fingerprints.is_empty() {
            return Ok((fingerprint, false));
        }
        match fingerprint {
            Some(seen) if self.pins.fingerprints.contains(&seen) => Ok((Some(seen), true)),
            Some(_) => Err(SecurityError::UntrustedServer("the server key is not pinned")),
            None => Err(SecurityError::UntrustedServer("the server sent no key")),
        }
    }
}

/// The parts of a `KEX_REPLY`.
struct Reply<'a> {
    suite: Suite,
    public: &'a [u8],
    key: &'a [u8],
    signature: &'a [u8],
    finished: &'a [u8],
    /// Everything up to and including the server key (what `th` covers).
    body: &'a [u8],
}

impl<'a> Reply<'a> {
    fn parse(payload: &'a [u8]) -> Result<Reply<'a>, SecurityError> {
        let bad = SecurityError::Handshake("malformed reply");
        let mut at = 32;
        let suite_id = *payload.get(at).ok_or(bad.clone())?;
        let suite =
            Suite::from_id(suite_id).ok_or(SecurityError::Handshake("reply names an unknown suite"))?;
        at += 1;
        let public = take_u16_prefixed(payload, &mut at).ok_or(bad.clone())?;
        let key = take_u16_prefixed(payload, &mut at).ok_or(bad.clone())?;
        let body = &payload[..at];
        let signature = take_u16_prefixed(payload, &mut at).ok_or(bad.clone())?;
        let valid_lengths = matches!(
            (key.len(), signature.len()),
            (0, 0) | (PUBLIC_KEY_LEN, SIGNATURE_LEN)
        );
        let finished = payload
            .get(at..)
            .filter(|rest| rest.len() == 32)
            .ok_or(bad.clone())?;
        if !valid_lengths {
            return Err(bad);
        }
        Ok(Reply {
            suite,
            public,
            key,
            signature,
            finished,
            body,
        })
    }
}

fn take_u16_prefixed<'a>(payload: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let head = payload.get(*at..*at + 2)?;
    let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
    let value = payload.get(*at + 2..*at + 2 + len)?;
    *at += 2 + len;
    Some(value)
}

/// The suites and public values of an offer; unknown suite ids are skipped (they stay in the
/// transcript).
fn parse_offer(payload: &[u8]) -> Result<Vec<(Suite, &[u8])>, SecurityError> {
    let bad = SecurityError::Handshake("malformed offer");
    let count = usize::from(*payload.get(32).ok_or(bad.clone())?);
    if count == 0 || count > MAX_OFFER {
        return Err(SecurityError::Handshake("an offer names 1 to 8 suites"));
    }
    let mut at = 33;
    let mut offered = Vec::with_capacity(count);
    for _ in 0..count {
        let id = *payload.get(at).ok_or(bad.clone())?;
        at += 1;
        let public = take_u16_prefixed(payload, &mut at).ok_or(bad.clone())?;
        if let Some(suite) = Suite::from_id(id) {
            if offered.iter().any(|(s, _)| *s == suite) {
                return Err(SecurityError::Handshake("offer names a suite twice"));
            }
            offered.push((suite, public));
        }
    }
    if at != payload.len() {
        return Err(bad);
    }
    Ok(offered)
}
