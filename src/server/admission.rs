//! Admission: from an accepted transport to a running peer.
//!
//! A new connection gets a slot (connection, opening and rate limits), runs the opening within
//! the handshake timeout, has its token validated and its session created or resumed, and
//! receives the server's answer. A resume is checked before it disturbs anything: the session
//! must exist, a keyed session needs a keyed opening and a valid binder, and the identity must
//! be the session's; only then is the session's old connection stopped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::limits::Address;
use super::Hub;
use crate::auth::{AuthRequest, Identity, Token};
use crate::connection::engine::{Engine, Opened};
use crate::connection::{self, Hooks, Outcome, Owner, Peer};
use crate::error::{AuthError, CloseInfo, Code, Error, Initiator, ProtocolError, Timeout};
use crate::file::Router;
use crate::opening::extensions::{Answer, Claim, TOKEN_LEN};
use crate::opening::{self, server::Accepted};
use crate::security::schedule::verify_binder;
use crate::transport::{FrameRead, FrameWrite, PeerInfo, Transport, TransportKind};

/// What a decided opening becomes.
enum Admitted {
    New {
        token: Option<[u8; TOKEN_LEN]>,
        identity: Option<Identity>,
    },
    Resume {
        peer: Peer,
        count: u64,
    },
}

/// A connection through its opening, ready to run as a peer.
struct Running<R, W> {
    peer: Peer,
    start: connection::Start,
    reader: R,
    writer: W,
    transport: TransportKind,
    /// The connection's place in the per-address limit, held while it runs.
    address: Option<Address>,
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Protocol(ProtocolError::local(Code::RESUME_FAILED, None, reason))
}

impl Hub {
    /// Takes a transport through the opening, authentication and, for a resumed session, the
    /// resume; if all pass, runs it as a peer. `identity` is set when the token was already
    /// validated (in the WebSocket upgrade).
    ///
    /// The opening runs boxed, owning the transport's halves, and hands them back: a future is
    /// as large as its largest state, and the peer's task keeps its future for the whole
    /// connection. The opening's states (handshake, authentication) are over once the peer
    /// runs; inline, they and a second copy of the halves would stay in every idle peer's task.
    pub(crate) fn admit<T: Transport>(
        self: Arc<Self>,
        transport: T,
        identity: Option<Identity>,
    ) -> impl Future<Output = ()> + Send {
        let info = transport.info();
        let (reader, writer) = transport.split();
        let opening = Box::pin(self.clone().opened(info, reader, writer, identity));
        self.run_opened(opening)
    }

    /// Runs what passed its opening as a peer, to the end of its connection, and keeps a
    /// resumable session that lost it for the resume window.
    async fn run_opened<R: FrameRead, W: FrameWrite>(
        self: Arc<Self>,
        opening: Pin<Box<impl Future<Output = Option<Running<R, W>>>>>,
    ) {
        let Some(running) = opening.await else { return };
        let Running {
            peer,
            start,
            reader,
            writer,
            transport,
            address,
        } = running;
        let hooks: Arc<dyn Hooks> = self.clone();
        let live = self.meters.live(transport);
        let outcome = connection::driver::run(peer.clone(), start, reader, writer, hooks).await;
        drop(live);
        // A session waiting for its client holds no connection of that address.
        drop(address);
        if let Outcome::Parked(lost) = outcome {
            self.wait_for_resume(peer, lost).await;
        }
    }

    /// The opening of a connection that owns its halves, handing them back with its peer.
    async fn opened<R: FrameRead, W: FrameWrite>(
        self: Arc<Self>,
        info: PeerInfo,
        mut reader: R,
        mut writer: W,
        identity: Option<Identity>,
    ) -> Option<Running<R, W>> {
        let transport = info.transport;
        let (peer, start, address) = self
            .pass_opening(info, &mut reader, &mut writer, identity)
            .await?;
        Some(Running {
            peer,
            start,
            reader,
            writer,
            transport,
            address,
        })
    }

    /// The opening of a connection, up to a peer ready to run and its place in the
    /// per-address limit (`None`: refused, or the answer could not be sent; what went wrong is
    /// reported and, where it can be, told to the peer).
    async fn pass_opening<R: FrameRead, W: FrameWrite>(
        self: &Arc<Self>,
        info: PeerInfo,
        reader: &mut R,
        writer: &mut W,
        identity: Option<Identity>,
    ) -> Option<(Peer, connection::Start, Option<Address>)> {
        if self.shutdown.is_cancelled() {
            opening::refuse(writer, None, Code::GOING_AWAY, "server is shutting down").await;
            return None;
        }
        let config = &self.config;
        let slot = self.limits.admit(
            info.remote.ip(),
            self.peers().len(),
            config.max_connections,
            config.max_opening,
            config.connections_per_second,
        );
        let address = slot.and_then(|slot| {
            let address = self
                .limits
                .address(info.remote.ip(), config.max_connections_per_address)?;
            Ok((slot, address))
        });
        let (slot, address) = match address {
            Ok(held) => held,
            Err(full) => {
                debug!(remote = %info.remote, reason = full.reason(), "refused");
                opening::refuse(writer, None, Code::TRY_AGAIN_LATER, full.reason()).await;
                return None;
            }
        };
        let accept = opening::server::accept(reader, writer, &self.security, &self.kex);
        let mut accepted = match tokio::time::timeout(config.handshake_timeout, accept).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(error)) => {
                self.refuse_opening(writer, error).await;
                return None;
            }
            Err(_) => {
                self.refuse_opening(writer, Error::Timeout(Timeout::Hello)).await;
                return None;
            }
        };
        let admitted = match self.decide(&mut accepted, identity, &info).await {
            Ok(admitted) => admitted,
            Err(error) => {
                opening::server::refuse_accepted(writer, &mut accepted, error.code(), &error.to_string())
                    .await;
                let auth = matches!(error, Error::Unauthorized(_));
                if error.code() == Code::RESUME_FAILED {
                    self.meters.resume(false);
                } else {
                    self.meters.refused(error.code(), auth);
                }
                self.report(None, &error);
                return None;
            }
        };
        drop(slot);
        let fell_back = accepted.fell_back();
        let (peer, start) = self.open(writer, accepted, admitted, info).await?;
        if let Some(event) = fell_back {
            self.security(&peer, &event);
        }
        Some((peer, start, address))
    }

    async fn refuse_opening<W: FrameWrite>(&self, writer: &mut W, error: Error) {
        let code = match &error {
            Error::Timeout(_) => Code::HANDSHAKE_TIMEOUT,
            error => error.code(),
        };
        if code != Code::ABNORMAL {
            opening::refuse(writer, None, code, &error.to_string()).await;
        }
        self.meters.refused(code, false);
        self.report(None, &error);
    }

    /// A lost connection's session is kept for the resume window; a resume replaces the
    /// connection before it runs out.
    async fn wait_for_resume(&self, peer: Peer, lost: CloseInfo) {
        let connection = peer.conn();
        tokio::time::sleep(self.config.resume_window).await;
        if Arc::ptr_eq(&connection, &peer.conn()) {
            debug!(peer = %peer.id(), "resume window over");
            peer.give_up(&lost);
        }
    }

    /// Authenticates and picks the session: a new one, or the one to resume.
    async fn decide(
        &self,
        accepted: &mut Accepted,
        identity: Option<Identity>,
        info: &PeerInfo,
    ) -> Result<Admitted, Error> {
        let credentials = &accepted.credentials;
        let identity = match (identity, &self.auth) {
            (Some(identity), _) => Some(identity),
            (None, None) => None,
            (None, Some(_)) => Some(self.authenticate(credentials.token.clone(), info).await?),
        };
        if let Some(claim) = credentials.resume.clone() {
            let peer = self.check_resume(accepted, &claim, identity.as_ref(), info.tls)?;
            return Ok(Admitted::Resume {
                peer,
                count: claim.count,
            });
        }
        let token = if credentials.session && !self.config.resume_window.is_zero() {
            Some(crate::security::random_array::<TOKEN_LEN>())
        } else {
            None
        };
        Ok(Admitted::New { token, identity })
    }

    /// Whether a resume may proceed: known session, the right kind of opening (a session
    /// that never exchanged keys: over TLS, or with `plain_resume`), a binder that proves the
    /// session's keys, the session's identity.
    fn check_resume(
        &self,
        accepted: &Accepted,
        claim: &Claim,
        identity: Option<&Identity>,
        over_tls: bool,
    ) -> Result<Peer, Error> {
        let peer = self
            .store
            .get(&claim.token)
            .ok_or_else(|| refused("unknown or expired session"))?;
        let secret = peer.engine().resume_secret().cloned();
        match (secret, accepted.keys()) {
            (Some(secret), Some(keys)) => {
                let binder = claim
                    .binder
                    .ok_or_else(|| refused("the resume carries no binder"))?;
                if !verify_binder(&secret, &keys.th2, &binder) {
                    return Err(refused("the resume is not bound to the session's keys"));
                }
            }
            (Some(_), None) => return Err(refused("a keyed session resumes only through a keyed opening")),
            // Over TLS end to end (the session's last connection and this one; by induction
            // every connection of it), the resume token never crossed in the clear.
            (None, _) if over_tls && peer.info().tls => {}
            (None, _) if !self.config.plain_resume => {
                return Err(refused(
                    "this server does not resume sessions that never exchanged keys",
                ))
            }
            (None, _) => {}
        }
        if let Some(identity) = identity {
            if !identity.is_in(peer.session()) {
                return Err(refused("the resume presents another identity"));
            }
        }
        if let Err(bad) = peer.engine().check_count(claim.count) {
            return Err(refused(bad.to_string()));
        }
        Ok(peer)
    }

    /// Answers a decided opening and starts its connection.
    async fn open<W: FrameWrite>(
        self: &Arc<Self>,
        writer: &mut W,
        accepted: Accepted,
        admitted: Admitted,
        info: PeerInfo,
    ) -> Option<(Peer, connection::Start)> {
        let secure = accepted.credentials.secure || self.security.required;
        match admitted {
            Admitted::New { token, identity } => {
                let answer = Answer {
                    session: token,
                    resume: None,
                    secure,
                };
                let (frames, opened) = self.answer(accepted, answer)?;
                let (peer, start) = self.new_peer(opened, token, identity, info);
                self.register(&peer);
                self.send_answer(writer, &peer, &frames)
                    .await
                    .then_some((peer, start))
            }
            Admitted::Resume { peer, count } => {
                peer.take_over().await;
                let received = peer.engine().received();
                let answer = Answer {
                    session: None,
                    resume: Some(received),
                    secure,
                };
                let (frames, opened) = self.answer(accepted, answer)?;
                let start = self.resume(&peer, opened, count, info)?;
                self.register(&peer);
                self.send_answer(writer, &peer, &frames)
                    .await
                    .then_some((peer, start))
            }
        }
    }

    fn answer(&self, accepted: Accepted, answer: Answer) -> Option<(Vec<crate::frame::Frame>, Opened)> {
        match opening::server::answer(accepted, answer) {
            Ok(answered) => Some(answered),
            Err(error) => {
                self.report(None, &error);
                None
            }
        }
    }

    fn new_peer(
        self: &Arc<Self>,
        opened: Opened,
        token: Option<[u8; TOKEN_LEN]>,
        identity: Option<Identity>,
        info: PeerInfo,
    ) -> (Peer, connection::Start) {
        let config = self.connection.clone();
        let mut settings = connection::settings(&config);
        // The server's one copy, not one per peer (the same config).
        settings.security = self.security.clone();
        let engine = Engine::new(settings, opened, token.is_some(), Instant::now());
        let owner = Owner {
            server: std::sync::RwLock::new(Some(self.as_owner())),
            kex: self.kex.clone(),
            files: Arc::new(Router::new(self.on_file.clone())),
            meters: self.meters.clone(),
        };
        let new = connection::new_peer(info, config, engine, owner, self.protocol.as_ref(), token);
        if let Some(identity) = identity {
            identity.store(new.peer.session());
        }
        if let Some(token) = token {
            self.store.insert(&token, new.peer.clone());
        }
        (new.peer, new.start)
    }

    /// This server as the owner a session keeps.
    fn as_owner(self: &Arc<Self>) -> std::sync::Weak<dyn std::any::Any + Send + Sync> {
        let hub: Arc<dyn std::any::Any + Send + Sync> = self.clone();
        Arc::downgrade(&hub)
    }

    fn resume(
        self: &Arc<Self>,
        peer: &Peer,
        opened: Opened,
        count: u64,
        info: PeerInfo,
    ) -> Option<connection::Start> {
        let remote = info.remote;
        match peer.resume(info, opened, count) {
            Ok(start) => {
                tracing::info!(peer = %peer.id(), remote = %remote, "session resumed");
                self.meters.resume(true);
                peer.set_owner(self.as_owner());
                Some(start)
            }
            Err(refusal) => {
                let reason = format!("the session could not resume: {refusal:?}");
                peer.give_up(&CloseInfo::new(
                    Code::RESUME_FAILED,
                    reason.clone(),
                    Initiator::Remote,
                ));
                self.meters.resume(false);
                self.report(None, &refused(reason));
                None
            }
        }
    }

    /// Registered before our answer goes out: once the client is open, the server counts it.
    fn register(&self, peer: &Peer) {
        self.peers_mut().insert(peer.id(), peer.clone());
    }

    async fn send_answer<W: FrameWrite>(
        &self,
        writer: &mut W,
        peer: &Peer,
        frames: &[crate::frame::Frame],
    ) -> bool {
        if let Err(error) = writer.write_batch(frames).await {
            self.peers_mut().remove(&peer.id());
            peer.close_now(Code::ABNORMAL, "the answer could not be sent");
            self.report(None, &Error::Io(error));
            return false;
        }
        true
    }

    /// Runs the validator on `token`, within the handshake timeout.
    pub(crate) async fn authenticate(
        &self,
        token: Option<Token>,
        info: &PeerInfo,
    ) -> Result<Identity, Error> {
        let validate = self
            .auth
            .as_ref()
            .ok_or_else(|| AuthError::Rejected("this server does not authenticate".into()))?;
        let token = token.ok_or(AuthError::Missing)?;
        if token.as_str().len() > crate::auth::MAX_TOKEN_LEN {
            return Err(AuthError::TooLong.into());
        }
        let request = AuthRequest {
            token,
            info: info.clone(),
        };
        match tokio::time::timeout(self.config.handshake_timeout, validate(request)).await {
            Ok(Ok(identity)) => Ok(identity),
            Ok(Err(rejection)) => Err(AuthError::Rejected(rejection.0).into()),
            Err(_) => Err(Error::Timeout(Timeout::Validation)),
        }
    }
}
