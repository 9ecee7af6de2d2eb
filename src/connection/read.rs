//! The read loop: frames in, control frames handled, messages to the protocol.
//!
//! It owns the receiving direction's security: the opener, whether the peer's direction is
//! secure, and feeding handshake messages to the handshake. A protected frame must verify; once
//! the peer's direction is secure a plain frame is fatal, except a close.

use std::sync::atomic::Ordering;

use super::{fail, Conn, Control, Hooks, Peer, SecStatus};
use crate::frame::control::Close;
use crate::frame::{Frame, FrameError, Kind};
use crate::protocol::{Dispatch, Message, Responder};
use crate::security::handshake::{self, Role};
use crate::security::record::Opener;
use crate::security::{SecurityError, SecurityEvent};
use crate::transport::FrameRead;
use crate::{Code, Error, Initiator};

/// The receiving direction's security state.
#[derive(Default)]
struct Incoming {
    opener: Option<Opener>,
    secure: bool,
}

pub(super) async fn read_loop<R: FrameRead>(
    peer: &Peer,
    conn: &Conn,
    reader: &mut R,
    dispatch: &mut dyn Dispatch,
    hooks: &dyn Hooks,
) {
    let mut incoming = Incoming::default();
    let stop = &conn.stop;
    // The connect hook may have taken a while: silence is measured from here.
    conn.heard();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            frame = reader.read_frame() => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => {
                conn.heard();
                frame
            }
            Ok(None) => {
                conn.record_end(
                    Code::ABNORMAL,
                    "connection lost without a close frame",
                    Initiator::Remote,
                );
                return;
            }
            Err(error) => {
                // A stream cut inside a frame is a lost connection, which a resumable session
                // survives; for any other session it stays a protocol error.
                let lost = matches!(error, FrameError::Truncated { .. }) && peer.is_resumable();
                let error = Error::Frame(error);
                if error.code() == Code::ABNORMAL || lost {
                    conn.record_end(Code::ABNORMAL, error.to_string(), Initiator::Remote);
                    return;
                }
                return fail(peer, conn, hooks, error);
            }
        };
        let protected = frame.tag.is_some();
        let frame = if protected {
            let Some(opener) = incoming.opener.as_mut() else {
                return fail(
                    peer,
                    conn,
                    hooks,
                    SecurityError::BadRecord("protected record before the handshake").into(),
                );
            };
            match opener.open(frame) {
                Ok(frame) => frame,
                Err(error) => return fail(peer, conn, hooks, error.into()),
            }
        } else if incoming.secure && frame.kind != Kind::Close {
            return fail(peer, conn, hooks, SecurityError::UnexpectedPlaintext.into());
        } else {
            frame
        };
        if protected && !incoming.secure {
            // The first protected record of a direction must be the one that turns it on.
            if (frame.kind, frame.id) != (Kind::Security, handshake::SEC_ON) {
                return fail(
                    peer,
                    conn,
                    hooks,
                    SecurityError::BadRecord("protected record before security on").into(),
                );
            }
            incoming.secure = true;
            conn.peer_secure.store(true, Ordering::Release);
            hooks.security(peer, &SecurityEvent::PeerSecure(true));
            continue;
        }
        if frame.kind.is_application() {
            if let Some(resume) = &peer.shared.resume {
                if resume.count_received() && resume.claim_ack() {
                    conn.ctl.push(Control::Ack);
                }
            }
        }
        match frame.kind {
            Kind::Message | Kind::Request => {
                if peer.shared.role == Role::Server
                    && peer.shared.config.security.required
                    && !incoming.secure
                {
                    let error =
                        SecurityError::Required("message sent before the sender's direction was secure");
                    let report = Close::new(error.code(), error.to_string()).to_frame(Kind::Error, frame.id);
                    if !reply(peer, stop, report).await {
                        return;
                    }
                    hooks.error(peer, &error.into());
                    continue;
                }
                let result = if frame.kind == Kind::Request {
                    let Some(request) = frame.payload.get(..4) else {
                        return fail(
                            peer,
                            conn,
                            hooks,
                            Error::Frame(FrameError::MalformedControl {
                                kind: Kind::Request,
                                what: "shorter than the 4-octet request id",
                            }),
                        );
                    };
                    let request = u32::from_be_bytes([request[0], request[1], request[2], request[3]]);
                    let message = Message {
                        id: frame.id,
                        payload: frame.payload.slice(4..),
                    };
                    let responder = Responder::new(peer.clone(), request);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        result = dispatch.request(peer, message, responder) => result,
                    }
                } else {
                    let message = Message {
                        id: frame.id,
                        payload: frame.payload,
                    };
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        result = dispatch.dispatch(peer, message) => result,
                    }
                };
                conn.heard();
                if let Err(error) = result {
                    if error.peer_fault {
                        let report =
                            Close::new(error.code, error.message.clone()).to_frame(Kind::Error, frame.id);
                        // Waiting here applies backpressure to a peer that provokes many errors.
                        if !reply(peer, stop, report).await {
                            return;
                        }
                    }
                    hooks.error(peer, &Error::Protocol(error));
                }
            }
            Kind::Security if frame.id == handshake::REQUEST => {
                let on = match frame.payload.as_ref() {
                    [0] => false,
                    [1] => true,
                    _ => {
                        return fail(
                            peer,
                            conn,
                            hooks,
                            SecurityError::Handshake("malformed security request").into(),
                        )
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = on_request(peer, conn, on) => {}
                }
            }
            Kind::Security => {
                if let Err(error) = on_security(peer, conn, hooks, &mut incoming, frame, protected) {
                    return fail(peer, conn, hooks, error);
                }
            }
            Kind::Ping => {
                let pong = Frame {
                    kind: Kind::Pong,
                    id: frame.id,
                    tag: None,
                    payload: frame.payload,
                };
                if !reply(peer, stop, pong).await {
                    return;
                }
            }
            Kind::Pong => {}
            Kind::Reply | Kind::ReplyError => {
                let answer = if frame.kind == Kind::Reply {
                    Ok(frame.payload)
                } else {
                    match Close::parse(Kind::ReplyError, &frame.payload) {
                        Ok(report) => Err(Error::Remote {
                            code: report.code,
                            message: report.reason,
                            id: frame.id,
                        }),
                        Err(error) => return fail(peer, conn, hooks, Error::Frame(error)),
                    }
                };
                if !peer.shared.requests.answer(frame.id, answer) {
                    let error = crate::ProtocolError::peer(
                        Code::UNKNOWN_REQUEST,
                        frame.id,
                        format!("no pending request {}", frame.id),
                    );
                    let report =
                        Close::new(error.code, error.message.clone()).to_frame(Kind::Error, frame.id);
                    if !reply(peer, stop, report).await {
                        return;
                    }
                    hooks.error(peer, &Error::Protocol(error));
                }
            }
            Kind::Ack => {
                let acknowledged = match (&peer.shared.resume, super::resume::parse_count(&frame.payload)) {
                    (Some(resume), Some(count)) => resume.acknowledge(count).map_err(|bad| bad.to_string()),
                    (None, _) => Err("acknowledgement outside a resumable session".into()),
                    (_, None) => Err("acknowledgement is not 8 octets".into()),
                };
                if let Err(what) = acknowledged {
                    return fail(
                        peer,
                        conn,
                        hooks,
                        Error::Protocol(crate::ProtocolError::local(Code::PROTOCOL_ERROR, None, what)),
                    );
                }
            }
            Kind::Error => match Close::parse(Kind::Error, &frame.payload) {
                Ok(report) => {
                    let error = Error::Remote {
                        code: report.code,
                        message: report.reason,
                        id: frame.id,
                    };
                    hooks.error(peer, &error);
                }
                Err(error) => return fail(peer, conn, hooks, Error::Frame(error)),
            },
            Kind::Close => {
                let close = Close::parse(Kind::Close, &frame.payload)
                    .unwrap_or_else(|_| Close::new(Code::PROTOCOL_ERROR, "malformed close frame"));
                let ends = peer.shared.resume.is_none() || super::ends_session(close.code);
                conn.record_end(close.code, close.reason, Initiator::Remote);
                if ends {
                    peer.shared.closing.store(true, Ordering::Release);
                }
                conn.peer_closed.cancel();
                return;
            }
            Kind::Hello => {
                return fail(
                    peer,
                    conn,
                    hooks,
                    Error::Handshake("hello after the connection opened".into()),
                );
            }
            // The remaining kinds are file frames.
            _ => {
                let outcome = crate::file::on_frame(peer, frame);
                if let Some(error) = outcome.error {
                    hooks.error(peer, &error);
                }
                if let Some(answer) = outcome.reply {
                    if !reply(peer, stop, answer).await {
                        return;
                    }
                }
                if let Some(offer) = outcome.offer {
                    hooks.file_offer(peer, offer);
                }
            }
        }
    }
}

/// Queues a frame for the peer, waiting for room (backpressure on a peer that provokes many
/// replies); `false` if the connection stopped first.
async fn reply(peer: &Peer, stop: &super::signal::TaskToken, frame: Frame) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = peer.enqueue(frame) => true,
    }
}

/// The peer asks us to turn the direction we send on or off.
///
/// With keys in place the toggle is queued here, so a peer that floods requests while not
/// reading is held back by its own full queue. Before the handshake, turning on must wait for
/// it, which this loop has to keep reading for: one task at most waits, and applies whatever
/// was asked last.
async fn on_request(peer: &Peer, conn: &Conn, on: bool) {
    let shared = conn;
    shared.wanted_secure.store(on, Ordering::Release);
    let keys_ready = matches!(shared.sec_status.get(), SecStatus::Done(_));
    if keys_ready || !on {
        if let Err(error) = peer.set_own_security(on).await {
            tracing::debug!(%error, "peer asked for a security change; it could not be made");
        }
        return;
    }
    if !shared.request_waiting.swap(true, Ordering::AcqRel) {
        let peer = peer.clone();
        let conn = peer.conn();
        tokio::spawn(async move {
            let result = match peer.handshake().await {
                Ok(_) => peer
                    .set_own_security(conn.wanted_secure.load(Ordering::Acquire))
                    .await
                    .map(drop),
                Err(error) => Err(error),
            };
            conn.request_waiting.store(false, Ordering::Release);
            if let Err(error) = result {
                tracing::debug!(%error, "peer asked for security; it could not be set");
            }
        });
    }
}

/// Handles one security frame (already opened if it was protected).
fn on_security(
    peer: &Peer,
    conn: &Conn,
    hooks: &dyn Hooks,
    incoming: &mut Incoming,
    frame: Frame,
    protected: bool,
) -> Result<(), Error> {
    let shared = conn;
    match frame.id {
        handshake::SEC_ON | handshake::SEC_OFF | handshake::REKEY if !protected => {
            Err(SecurityError::BadRecord("security control record is not protected").into())
        }
        // A repeated "on" while already on changes nothing.
        handshake::SEC_ON => Ok(()),
        handshake::SEC_OFF => {
            incoming.secure = false;
            shared.peer_secure.store(false, Ordering::Release);
            hooks.security(peer, &SecurityEvent::PeerSecure(false));
            Ok(())
        }
        handshake::REKEY => {
            if let Some(opener) = incoming.opener.as_mut() {
                opener.advance();
            }
            Ok(())
        }
        id => {
            let step = shared.lock_handshake().on_message(id, &frame.payload)?;
            if let Some((sealer, opener)) = step.keys {
                incoming.opener = Some(opener);
                // Installed before anything below is sent, so the writer has the keys first.
                shared.ctl.push(Control::Keys(Box::new(sealer)));
            }
            if let Some(frame) = step.send {
                shared.ctl.push(Control::Frame(frame));
            }
            if let Some(event) = step.event {
                let failed = matches!(event, SecurityEvent::FailSecure { .. });
                shared.sec_status.set(match &event {
                    SecurityEvent::Handshaked { suite } => SecStatus::Done(*suite),
                    SecurityEvent::FailSecure { code, reason } => SecStatus::Failed(*code, reason.clone()),
                    SecurityEvent::PeerSecure(_) => SecStatus::InProgress,
                });
                hooks.security(peer, &event);
                if failed && peer.shared.config.security.required {
                    return Err(SecurityError::Required("no common security suite").into());
                }
            } else {
                shared.sec_status.update(|status| {
                    let idle = *status == SecStatus::Idle;
                    if idle {
                        *status = SecStatus::InProgress;
                    }
                    idle
                });
            }
            Ok(())
        }
    }
}
