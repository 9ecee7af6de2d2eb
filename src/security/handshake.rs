//! The handshake: its messages and the state machine of each role.
//!
//! Security frames have kind `SECURITY` (0x06); the id field is the message type. The client
//! offers one ephemeral public value per suite it supports; the server picks the first suite of
//! its own priority list that the client offered, answers with its public value and a finished
//! MAC, and the client confirms with its own. The transcript (both hellos, the offer and the
//! reply) is hashed into every key, so a changed offer (a downgrade) fails the finished MACs.

use bytes::{BufMut, Bytes, BytesMut};

use super::kex::KeyShare;
use super::record::{Opener, Sealer};
use super::schedule::{derive, finished, hash, verify_finished, HandshakeSecrets};
use super::{random, SecurityConfig, SecurityError, SecurityEvent, Suite};
use crate::frame::control::{Close, Hello};
use crate::frame::{Frame, Kind};
use crate::Code;

/// Client → server: the offer. `client random (32) | count (u8) | count × (suite (u8) |
/// length (u16) | public value)`.
pub const KEX_INIT: u32 = 1;
/// Server → client: `server random (32) | suite (u8) | length (u16) | public value | server
/// finished (32)`.
pub const KEX_REPLY: u32 = 2;
/// Server → client: no common suite; payload as a close frame's (code, reason).
pub const KEX_FAIL: u32 = 3;
/// Client → server: `client finished (32)`.
pub const FINISHED: u32 = 4;
/// Server → client: please start a handshake (empty).
pub const START: u32 = 5;
/// Protected: the sender's direction is secure from this record on (empty).
pub const SEC_ON: u32 = 8;
/// Protected: the sender's direction is plain after this record (empty).
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

enum State {
    Idle,
    Requested,
    AwaitReply {
        shares: Vec<(Suite, KeyShare)>,
        transcript: Vec<u8>,
    },
    AwaitFinished {
        suite: Suite,
        secrets: HandshakeSecrets,
        th2: [u8; 32],
    },
    Done(Suite),
    Failed,
}

/// What a handshake step asks the connection to do.
#[derive(Default)]
pub struct Step {
    /// A security frame to send.
    pub send: Option<Frame>,
    /// Keys for the direction we send and the one we receive.
    pub keys: Option<(Sealer, Opener)>,
    /// What to tell the application.
    pub event: Option<SecurityEvent>,
}

/// One connection's handshake.
pub struct Handshake {
    role: Role,
    config: SecurityConfig,
    hellos: Vec<u8>,
    state: State,
}

fn put_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Handshake {
    /// A handshake that has not started. Both hellos of the connection begin its transcript.
    pub fn new(role: Role, config: SecurityConfig, client_hello: &Hello, server_hello: &Hello) -> Handshake {
        let mut hellos = Vec::new();
        put_len_prefixed(&mut hellos, &client_hello.to_frame().payload);
        put_len_prefixed(&mut hellos, &server_hello.to_frame().payload);
        Handshake {
            role,
            config,
            hellos,
            state: State::Idle,
        }
    }

    /// The negotiated suite, once done.
    pub fn suite(&self) -> Option<Suite> {
        match self.state {
            State::Done(suite) => Some(suite),
            _ => None,
        }
    }

    /// Starts the handshake if it has not started: the client's offer, or the server's request
    /// for one. `None` if it is already under way, done or failed.
    pub fn begin(&mut self) -> Option<Frame> {
        match (self.role, &self.state) {
            (Role::Client, State::Idle) => Some(self.offer()),
            (Role::Server, State::Idle) => {
                self.state = State::Requested;
                Some(frame(START, Bytes::new()))
            }
            _ => None,
        }
    }

    fn offer(&mut self) -> Frame {
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
        let payload = payload.freeze();
        let mut transcript = self.hellos.clone();
        put_len_prefixed(&mut transcript, &payload);
        self.state = State::AwaitReply { shares, transcript };
        frame(KEX_INIT, payload)
    }

    /// Handles a received security message of type `id` that belongs to the handshake.
    pub fn on_message(&mut self, id: u32, payload: &[u8]) -> Result<Step, SecurityError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (self.role, id, state) {
            (Role::Client, START, state @ State::Idle) => {
                self.state = state;
                Ok(Step {
                    send: Some(self.offer()),
                    ..Step::default()
                })
            }
            (Role::Client, START, state) => {
                // Already under way or finished: nothing to do.
                self.state = state;
                Ok(Step::default())
            }
            (Role::Server, KEX_INIT, State::Idle | State::Requested) => self.on_offer(payload),
            (Role::Client, KEX_REPLY, State::AwaitReply { shares, transcript }) => {
                self.on_reply(payload, shares, transcript)
            }
            (Role::Client, KEX_FAIL, State::AwaitReply { .. }) => {
                let close = Close::parse(Kind::Security, payload)
                    .unwrap_or_else(|_| Close::new(Code::NO_COMMON_SUITE, "no common suite"));
                let event = SecurityEvent::FailSecure {
                    code: close.code,
                    reason: close.reason,
                };
                Ok(Step {
                    event: Some(event),
                    ..Step::default()
                })
            }
            (Role::Server, FINISHED, State::AwaitFinished { suite, secrets, th2 }) => {
                verify_finished(&secrets.client_finished, &th2, payload)?;
                self.state = State::Done(suite);
                let keys = (
                    Sealer::new(suite, secrets.s2c.clone()),
                    Opener::new(suite, secrets.c2s.clone()),
                );
                Ok(Step {
                    keys: Some(keys),
                    event: Some(SecurityEvent::Handshaked { suite }),
                    send: None,
                })
            }
            _ => Err(SecurityError::Handshake("unexpected handshake message")),
        }
    }

    fn on_offer(&mut self, payload: &[u8]) -> Result<Step, SecurityError> {
        let offered = parse_offer(payload)?;
        let chosen = self.config.suites.iter().find_map(|suite| {
            offered
                .iter()
                .find(|(s, _)| s == suite)
                .map(|(s, public)| (*s, public))
        });
        let Some((suite, client_public)) = chosen else {
            let fail = Close::new(Code::NO_COMMON_SUITE, "no common security suite");
            let event = SecurityEvent::FailSecure {
                code: fail.code,
                reason: fail.reason.clone(),
            };
            let send = frame(KEX_FAIL, fail.to_frame(Kind::Security, KEX_FAIL).payload);
            return Ok(Step {
                send: Some(send),
                event: Some(event),
                keys: None,
            });
        };
        let (share, server_public) = KeyShare::generate(suite);
        let shared = share.agree(client_public)?;
        let mut server_random = [0u8; 32];
        random(&mut server_random);
        let mut body = BytesMut::new();
        body.put_slice(&server_random);
        body.put_u8(suite.id());
        body.put_u16(server_public.len() as u16);
        body.put_slice(&server_public);

        let mut transcript = self.hellos.clone();
        put_len_prefixed(&mut transcript, payload);
        transcript.extend_from_slice(&body);
        let th = hash(&transcript);
        let secrets = derive(&shared, self.config.psk.as_deref(), &th);
        let server_finished = finished(&secrets.server_finished, &th);
        transcript.extend_from_slice(&server_finished);
        let th2 = hash(&transcript);
        body.put_slice(&server_finished);
        self.state = State::AwaitFinished { suite, secrets, th2 };
        Ok(Step {
            send: Some(frame(KEX_REPLY, body.freeze())),
            ..Step::default()
        })
    }

    fn on_reply(
        &mut self,
        payload: &[u8],
        shares: Vec<(Suite, KeyShare)>,
        mut transcript: Vec<u8>,
    ) -> Result<Step, SecurityError> {
        let bad = SecurityError::Handshake("malformed reply");
        if payload.len() < 32 + 1 + 2 + 32 {
            return Err(bad);
        }
        let suite =
            Suite::from_id(payload[32]).ok_or(SecurityError::Handshake("reply names an unknown suite"))?;
        let len = usize::from(u16::from_be_bytes([payload[33], payload[34]]));
        if payload.len() != 35 + len + 32 {
            return Err(bad);
        }
        let (body, server_finished) = payload.split_at(35 + len);
        let server_public = &body[35..];
        let (_, share) = shares
            .iter()
            .find(|(s, _)| *s == suite)
            .ok_or(SecurityError::Handshake(
                "server chose a suite that was not offered",
            ))?;
        let shared = share.agree(server_public)?;
        transcript.extend_from_slice(body);
        let th = hash(&transcript);
        let secrets = derive(&shared, self.config.psk.as_deref(), &th);
        verify_finished(&secrets.server_finished, &th, server_finished)?;
        transcript.extend_from_slice(server_finished);
        let th2 = hash(&transcript);
        let client_finished = finished(&secrets.client_finished, &th2);
        self.state = State::Done(suite);
        let keys = (
            Sealer::new(suite, secrets.c2s.clone()),
            Opener::new(suite, secrets.s2c.clone()),
        );
        Ok(Step {
            send: Some(frame(FINISHED, Bytes::copy_from_slice(&client_finished))),
            keys: Some(keys),
            event: Some(SecurityEvent::Handshaked { suite }),
        })
    }
}

/// The suites and public values of an offer; unknown suite ids are skipped (they stay in the
/// transcript).
fn parse_offer(payload: &[u8]) -> Result<Vec<(Suite, &[u8])>, SecurityError> {
    let bad = SecurityError::Handshake("malformed offer");
    let count = usize::from(*payload.get(32).ok_or(bad.clone())?);
    if count > MAX_OFFER {
        return Err(SecurityError::Handshake("offer names too many suites"));
    }
    let mut at = 33;
    let mut offered = Vec::with_capacity(count);
    for _ in 0..count {
        let head = payload.get(at..at + 3).ok_or(bad.clone())?;
        let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let public = payload.get(at + 3..at + 3 + len).ok_or(bad.clone())?;
        if let Some(suite) = Suite::from_id(head[0]) {
            if offered.iter().any(|(s, _)| *s == suite) {
                return Err(SecurityError::Handshake("offer names a suite twice"));
            }
            offered.push((suite, public));
        }
        at += 3 + len;
    }
    if at != payload.len() {
        return Err(bad);
    }
    Ok(offered)
}
