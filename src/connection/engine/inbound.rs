//! What a frame from the peer does: the receiving rules, kind by kind.
//!
//! Every frame first passes the security table of PROTOCOL.md §9.3 ([`super::security::Rx`]);
//! then its kind decides. Nothing is handled after the connection's end is recorded.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::resume::parse_count;
use super::security::Arrival;
use super::{marker, Engine, Event, KexInput, KexJob, KexStatus};
use crate::error::{Code, Error, Initiator, ProtocolError, RemoteError};
use crate::frame::control::Close;
use crate::frame::{Frame, FrameError, Kind};
use crate::protocol::Message;
use crate::security::handshake::{self, Role, FINISHED, KEX_FAIL, KEX_INIT, KEX_REPLY, START};
use crate::security::SecurityError;

impl Engine {
    /// Applies one frame from the peer; what the driver must do lands in `events`, in order.
    pub(crate) fn on_frame(&mut self, frame: Frame, now: Instant, events: &mut VecDeque<Event>) {
        if self.conn.stopped {
            return;
        }
        self.heard(now);
        let frame = match self.conn.rx.accept(frame) {
            Ok(Arrival::Frame(frame)) => frame,
            Ok(Arrival::Lost) => return self.lost("an unprotected close after the key exchange", events),
            Err(error) => return self.fail(error.into(), events),
        };
        let counted = frame.kind.is_counted();
        if counted && self.conn.strict && !self.conn.rx.is_secure() {
            let error = SecurityError::Required("a plain frame from a peer that must be secure");
            return self.fail(error.into(), events);
        }
        if let Err(error) = self.charge(&frame, now) {
            return self.fail(error, events);
        }
        if counted {
            if let Some(resume) = self.resume.as_mut() {
                resume.count_received();
            }
        }
        match frame.kind {
            Kind::Message => events.push_back(Event::Deliver(Message {
                id: frame.id,
                payload: frame.payload,
            })),
            Kind::Request => self.on_request(frame, events),
            Kind::Reply | Kind::ReplyError => self.on_answer(frame, events),
            Kind::Security => self.on_security(frame, now, events),
            Kind::Ping => events.push_back(Event::Respond(Frame {
                kind: Kind::Pong,
                tag: None,
                ..frame
            })),
            Kind::Pong => {}
            Kind::Ack => self.on_ack(&frame.payload, events),
            Kind::Error => match Close::parse(Kind::Error, &frame.payload) {
                Ok(report) => events.push_back(Event::Error(Error::Remote(RemoteError::new(
                    report.code,
                    report.reason,
                    frame.id,
                )))),
                Err(error) => self.fail(error.into(), events),
            },
            Kind::Close => self.on_close(&frame.payload, events),
            Kind::Hello => self.fail(
                Error::Frame(FrameError::MalformedControl {
                    kind: Kind::Hello,
                    what: "a hello after the opening exchange",
                }),
                events,
            ),
            _ => self.on_file(frame, events),
        }
    }

    fn on_request(&mut self, frame: Frame, events: &mut VecDeque<Event>) {
        let Some(head) = frame.payload.get(..4) else {
            let error = FrameError::MalformedControl {
                kind: Kind::Request,
                what: "shorter than the 4-octet request id",
            };
            return self.fail(error.into(), events);
        };
        let request = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let message = Message {
            id: frame.id,
            payload: frame.payload.slice(4..),
        };
        events.push_back(Event::Request { request, message });
    }

    fn on_answer(&mut self, frame: Frame, events: &mut VecDeque<Event>) {
        let answer = if frame.kind == Kind::Reply {
            Ok(frame.payload)
        } else {
            match Close::parse(Kind::ReplyError, &frame.payload) {
                Ok(report) => Err(Error::Remote(RemoteError::new(
                    report.code,
                    report.reason,
                    frame.id,
                ))),
                Err(error) => return self.fail(error.into(), events),
            }
        };
        if !self.requests.answer(frame.id, answer) {
            let error = ProtocolError::peer(
                Code::UNKNOWN_REQUEST,
                frame.id,
                format!("no pending request {}", frame.id),
            );
            events.push_back(Event::Respond(
                Close::new(error.code, error.message.clone()).to_frame(Kind::Error, frame.id),
            ));
            events.push_back(Event::Error(Error::Protocol(error)));
        }
    }

    fn on_ack(&mut self, payload: &[u8], events: &mut VecDeque<Event>) {
        let acknowledged = match (self.resume.as_mut(), parse_count(payload)) {
            (Some(resume), Some(count)) => resume.acknowledge(count).map_err(|bad| bad.to_string()),
            (None, _) => Err("acknowledgement outside a resumable session".into()),
            (_, None) => Err("acknowledgement is not 8 octets".into()),
        };
        if let Err(what) = acknowledged {
            let error = ProtocolError::local(Code::PROTOCOL_ERROR, None, what);
            self.fail(Error::Protocol(error), events);
        }
    }

    fn on_close(&mut self, payload: &[u8], events: &mut VecDeque<Event>) {
        let close = Close::parse(Kind::Close, payload)
            .unwrap_or_else(|_| Close::new(Code::PROTOCOL_ERROR, "malformed close frame"));
        let ends = super::ends_session(close.code);
        self.record_end(close.code, close.reason, Initiator::Remote, ends);
        self.conn.peer_closed = true;
        self.conn.stopped = true;
        events.push_back(Event::Stop);
    }

    fn on_file(&mut self, frame: Frame, events: &mut VecDeque<Event>) {
        match self.files.on_frame(frame) {
            Ok(event) => events.push_back(Event::File(event)),
            Err(violation) => {
                if let Some(reply) = violation.reply {
                    events.push_back(Event::Respond(reply));
                }
                let error = crate::error::FileError::new(violation.code, violation.reason);
                events.push_back(Event::Error(Error::File(error)));
            }
        }
    }

    fn on_security(&mut self, frame: Frame, now: Instant, events: &mut VecDeque<Event>) {
        let protected = self.conn.rx.is_keyed();
        match frame.id {
            handshake::SEC_ON => {
                self.conn.rx.toggle(true);
                events.push_back(Event::Security(crate::security::SecurityEvent::PeerSecure(true)));
            }
            handshake::SEC_OFF => {
                if self.conn.strict {
                    let error = SecurityError::Required("the peer turned its direction off");
                    return self.fail(error.into(), events);
                }
                self.conn.rx.toggle(false);
                events.push_back(Event::Security(crate::security::SecurityEvent::PeerSecure(false)));
            }
            handshake::REKEY => self.conn.rx.advance(),
            handshake::REQUEST => self.on_toggle_request(&frame.payload, protected, events),
            START | KEX_INIT | KEX_REPLY | KEX_FAIL | FINISHED => {
                self.on_kex(frame.id, frame.payload, now, events)
            }
            _ => self.fail(
                SecurityError::Handshake("unknown security message").into(),
                events,
            ),
        }
    }

    /// The peer asks us to turn our direction on or off.
    fn on_toggle_request(&mut self, payload: &[u8], protected: bool, events: &mut VecDeque<Event>) {
        let on = match payload {
            [1] => true,
            [0] => false,
            _ => {
                return self.fail(
                    SecurityError::Handshake("malformed security request").into(),
                    events,
                )
            }
        };
        if on {
            if self.conn.tx.is_keyed() {
                events.push_back(Event::Respond(marker(true)));
            } else {
                self.conn.wants_own = Some(true);
                self.start_kex(events);
            }
            return;
        }
        if self.conn.strict {
            let error = SecurityError::Required("this side must stay secure");
            let report = Close::new(error.code(), error.to_string()).to_frame(Kind::Error, 0);
            events.push_back(Event::Respond(report));
            events.push_back(Event::Error(error.into()));
            return;
        }
        // Before keys nothing of ours can be secure; after them the request arrived protected
        // (the receiving rules refuse it plain).
        self.conn.wants_own = None;
        if protected {
            events.push_back(Event::Respond(marker(false)));
        }
    }

    /// Starts a key exchange the peer's request needs.
    fn start_kex(&mut self, events: &mut VecDeque<Event>) {
        match self.begin_kex() {
            Ok(Some(job)) => events.push_back(Event::Kex(Box::new(job))),
            Ok(None) => {}
            Err(error) => {
                self.conn.wants_own = None;
                events.push_back(Event::Error(error));
            }
        }
    }

    /// A key-exchange message: the expensive ones become a job, the rest are applied here.
    fn on_kex(&mut self, id: u32, payload: Bytes, now: Instant, events: &mut VecDeque<Event>) {
        let Some(mut handshake) = self.conn.handshake.take() else {
            if id == START {
                // Our own offer is being made right now.
                return;
            }
            return self.fail(
                SecurityError::Handshake("a key-exchange message while one is computing").into(),
                events,
            );
        };
        let heavy = matches!(
            (handshake.role(), id),
            (Role::Server, KEX_INIT) | (Role::Client, KEX_REPLY) | (Role::Client, START)
        );
        if self.conn.status == KexStatus::Idle {
            self.conn.status = KexStatus::Running;
        }
        if heavy {
            let input = match id {
                START if handshake.is_idle() => KexInput::Offer,
                // Already offering: nothing to do.
                START => {
                    self.conn.handshake = Some(handshake);
                    return;
                }
                _ => KexInput::Message(id, payload),
            };
            events.push_back(Event::Kex(Box::new(KexJob { handshake, input })));
            return;
        }
        let result = handshake.on_message(id, &payload);
        self.kex_done(super::KexDone { handshake, result }, now, events);
    }
}
