//! File transfer rules of a session: which transfers exist, credit, and what a file frame
//! from the peer may do (PROTOCOL.md §10).
//!
//! This module owns the accounting a hostile sender could break: offers beyond the limit,
//! content before acceptance or beyond the credit, frames for unknown transfers, malformed
//! payloads. It turns valid file frames into [`FileEvent`]s for the file module (which writes
//! and reads files) and invalid ones into a refusal and a typed error. It must not touch files,
//! tasks or queues.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::error::Code;
use crate::frame::file as wire;
use crate::frame::{Frame, Kind};

/// How many ended incoming transfers are remembered to recognise chunks still in flight.
const RECENT: usize = 64;

/// A valid file frame from the peer, for the file module.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileEvent {
    /// The peer offers a file (the application decides).
    Offer {
        id: u32,
        size: Option<u64>,
        name: String,
    },
    /// Content of an accepted incoming transfer, within its credit.
    Chunk { id: u32, bytes: Bytes },
    /// The sender's end of an incoming transfer.
    End { id: u32, size: u64, sha256: [u8; 32] },
    /// The sender gave an incoming transfer up.
    Abort { id: u32, code: Code, reason: String },
    /// Credit for an outgoing transfer; `accepted` on the first grant.
    Credit { id: u32, credit: u32, accepted: bool },
    /// The receiver paused or resumed an outgoing transfer.
    Pause { id: u32, paused: bool },
    /// The receiver verified and stored an outgoing transfer.
    Done { id: u32, sha256: [u8; 32] },
    /// The receiver declined or ended an outgoing transfer.
    Refused { id: u32, code: Code, reason: String },
}

/// A file frame that broke the rules: what to tell the peer (if anything) and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) code: Code,
    pub(crate) reason: String,
    pub(crate) reply: Option<Frame>,
}

impl Violation {
    fn new(code: Code, reason: String, reply: Option<Frame>) -> Violation {
        Violation { code, reason, reply }
    }
}

/// Where an incoming transfer stands.
enum Incoming {
    Offered,
    /// Content octets the sender may still send.
    Accepted {
        credit: u64,
    },
}

/// The transfers of a session, both directions.
#[derive(Default)]
pub(crate) struct Files {
    max_incoming: usize,
    incoming: HashMap<u32, Incoming>,
    recent: VecDeque<u32>,
    next_outgoing: u32,
    outgoing: HashSet<u32>,
    /// Outgoing transfers the receiver has accepted.
    accepted: HashSet<u32>,
}

impl Files {
    pub(crate) fn new(max_incoming: usize) -> Files {
        Files {
            max_incoming,
            ..Files::default()
        }
    }

    /// A new outgoing transfer id (unused among our own offers).
    pub(crate) fn new_outgoing(&mut self) -> u32 {
        loop {
            let id = self.next_outgoing & crate::frame::MAX_ID;
            self.next_outgoing = self.next_outgoing.wrapping_add(1);
            if self.outgoing.insert(id) {
                return id;
            }
        }
    }

    /// An outgoing transfer ended (either way).
    pub(crate) fn end_outgoing(&mut self, id: u32) {
        self.outgoing.remove(&id);
        self.accepted.remove(&id);
    }

    /// The application accepted an offer with a first credit of `window`; false if the offer
    /// is gone (withdrawn, or the connection ended).
    pub(crate) fn accept(&mut self, id: u32, window: u32) -> bool {
        match self.incoming.get_mut(&id) {
            Some(state @ Incoming::Offered) => {
                *state = Incoming::Accepted {
                    credit: u64::from(window),
                };
                true
            }
            _ => false,
        }
    }

    /// The receiver grants `n` more octets (recorded before the frame goes out, so no chunk
    /// it allows is ever refused).
    pub(crate) fn grant(&mut self, id: u32, n: u32) {
        if let Some(Incoming::Accepted { credit }) = self.incoming.get_mut(&id) {
            *credit = credit.saturating_add(u64::from(n));
        }
    }

    /// An incoming transfer ended (declined, finished, failed): chunks still in flight for it
    /// are expected from now on.
    pub(crate) fn end_incoming(&mut self, id: u32) {
        if self.incoming.remove(&id).is_some() {
            self.recent.push_back(id);
            if self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
    }

    /// Applies the rules to one file frame from the peer.
    pub(crate) fn on_frame(&mut self, frame: Frame) -> Result<FileEvent, Violation> {
        let id = frame.id;
        match frame.kind {
            Kind::FileOffer => self.on_offer(id, &frame.payload),
            Kind::FileChunk | Kind::FileEnd | Kind::FileAbort => self.on_content(frame),
            _ => self.on_answer(frame),
        }
    }

    fn on_offer(&mut self, id: u32, payload: &[u8]) -> Result<FileEvent, Violation> {
        let Ok((size, name)) = wire::parse_offer(payload) else {
            let reply = wire::refuse(id, Code::FILE_FLOW_VIOLATION, "malformed offer");
            return Err(Violation::new(
                Code::FILE_FLOW_VIOLATION,
                "malformed file offer".into(),
                Some(reply),
            ));
        };
        if self.incoming.contains_key(&id) {
            return Err(Violation::new(
                Code::FILE_FLOW_VIOLATION,
                format!("transfer {id} offered twice"),
                None,
            ));
        }
        if self.incoming.len() >= self.max_incoming {
            let reply = wire::refuse(id, Code::TOO_MANY_TRANSFERS, "too many concurrent transfers");
            return Err(Violation::new(
                Code::TOO_MANY_TRANSFERS,
                format!("offer {id} beyond the limit of concurrent transfers"),
                Some(reply),
            ));
        }
        self.incoming.insert(id, Incoming::Offered);
        Ok(FileEvent::Offer { id, size, name })
    }

    fn on_content(&mut self, frame: Frame) -> Result<FileEvent, Violation> {
        let id = frame.id;
        let kind = frame.kind;
        match self.incoming.get_mut(&id) {
            Some(Incoming::Accepted { credit }) => {
                if kind == Kind::FileChunk {
                    let len = frame.payload.len() as u64;
                    let Some(left) = credit.checked_sub(len) else {
                        self.end_incoming(id);
                        let reply = wire::refuse(id, Code::FILE_FLOW_VIOLATION, "more than the credit");
                        return Err(Violation::new(
                            Code::FILE_FLOW_VIOLATION,
                            format!("transfer {id}: more than the credit"),
                            Some(reply),
                        ));
                    };
                    *credit = left;
                    return Ok(FileEvent::Chunk {
                        id,
                        bytes: frame.payload,
                    });
                }
                Ok(content_end(id, kind, &frame.payload))
            }
            Some(Incoming::Offered) => {
                if kind == Kind::FileAbort {
                    // Withdrawn before the application decided.
                    let event = content_end(id, kind, &frame.payload);
                    self.end_incoming(id);
                    return Ok(event);
                }
                let reply = wire::refuse(id, Code::FILE_FLOW_VIOLATION, "content before acceptance");
                Err(Violation::new(
                    Code::FILE_FLOW_VIOLATION,
                    format!("transfer {id}: content before acceptance"),
                    Some(reply),
                ))
            }
            None if self.recent.contains(&id) => Err(Violation::new(
                Code::UNKNOWN_TRANSFER,
                format!("late {kind:?} for ended transfer {id}"),
                None,
            )),
            None => {
                let reply = crate::frame::control::Close::new(Code::UNKNOWN_TRANSFER, "unknown transfer")
                    .to_frame(Kind::Error, id);
                Err(Violation::new(
                    Code::UNKNOWN_TRANSFER,
                    format!("{kind:?} for unknown transfer {id}"),
                    Some(reply),
                ))
            }
        }
    }

    fn on_answer(&mut self, frame: Frame) -> Result<FileEvent, Violation> {
        let id = frame.id;
        if !self.outgoing.contains(&id) {
            return Err(Violation::new(
                Code::UNKNOWN_TRANSFER,
                format!("{:?} for unknown outgoing transfer {id}", frame.kind),
                None,
            ));
        }
        let malformed = |what: &str| Ok(refused(id, Code::FILE_FLOW_VIOLATION, what));
        match frame.kind {
            Kind::FileAccept | Kind::FileCredit => match wire::parse_u32(&frame.payload) {
                Ok(credit) => {
                    let accepted = self.accepted.insert(id);
                    Ok(FileEvent::Credit { id, credit, accepted })
                }
                Err(()) => malformed("malformed credit"),
            },
            Kind::FilePause => Ok(FileEvent::Pause { id, paused: true }),
            Kind::FileResume => Ok(FileEvent::Pause { id, paused: false }),
            Kind::FileDone => match <[u8; 32]>::try_from(&frame.payload[..]) {
                Ok(sha256) => Ok(FileEvent::Done { id, sha256 }),
                Err(_) => malformed("malformed done"),
            },
            _ => {
                let error = wire::parse_reason(&frame.payload, Code::FILE_CANCELLED);
                Ok(refused(id, error.code, &error.reason))
            }
        }
    }
}

fn refused(id: u32, code: Code, reason: &str) -> FileEvent {
    FileEvent::Refused {
        id,
        code,
        reason: reason.to_owned(),
    }
}

/// `FILE_END` or `FILE_ABORT` of an incoming transfer as an event; a malformed end aborts it.
fn content_end(id: u32, kind: Kind, payload: &[u8]) -> FileEvent {
    if kind == Kind::FileEnd {
        if let Ok((size, sha256)) = wire::parse_end(payload) {
            return FileEvent::End { id, size, sha256 };
        }
        return FileEvent::Abort {
            id,
            code: Code::FILE_FLOW_VIOLATION,
            reason: "malformed file end".into(),
        };
    }
    let error = wire::parse_reason(payload, Code::FILE_CANCELLED);
    FileEvent::Abort {
        id,
        code: error.code,
        reason: error.reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u32, len: usize) -> Frame {
        wire::frame(Kind::FileChunk, id, Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn content_beyond_the_credit_ends_the_transfer_with_a_flow_violation() {
        let mut files = Files::new(8);
        assert!(matches!(
            files.on_frame(wire::offer(3, "a.txt", Some(100))),
            Ok(FileEvent::Offer { id: 3, .. })
        ));
        assert_eq!(
            files.on_frame(chunk(3, 10)).unwrap_err().code,
            Code::FILE_FLOW_VIOLATION,
            "content before acceptance"
        );
        assert!(files.accept(3, 16));
        assert!(matches!(
            files.on_frame(chunk(3, 16)),
            Ok(FileEvent::Chunk { .. })
        ));
        let violation = files.on_frame(chunk(3, 1)).unwrap_err();
        assert_eq!(violation.code, Code::FILE_FLOW_VIOLATION);
        assert!(violation.reply.is_some(), "the sender is told");
        // Ended: what was still in flight is late, not unknown, and needs no answer.
        let late = files.on_frame(chunk(3, 1)).unwrap_err();
        assert_eq!((late.code, late.reply), (Code::UNKNOWN_TRANSFER, None));
    }

    #[test]
    fn granted_credit_admits_more_content() {
        let mut files = Files::new(8);
        files.on_frame(wire::offer(1, "b", None)).unwrap();
        files.accept(1, 4);
        files.on_frame(chunk(1, 4)).unwrap();
        files.grant(1, 4);
        assert!(files.on_frame(chunk(1, 4)).is_ok());
    }

    #[test]
    fn offers_beyond_the_limit_are_refused_and_repeats_are_violations() {
        let mut files = Files::new(1);
        files.on_frame(wire::offer(1, "a", None)).unwrap();
        assert_eq!(
            files.on_frame(wire::offer(1, "a", None)).unwrap_err().code,
            Code::FILE_FLOW_VIOLATION
        );
        assert_eq!(
            files.on_frame(wire::offer(2, "b", None)).unwrap_err().code,
            Code::TOO_MANY_TRANSFERS
        );
    }

    #[test]
    fn answers_for_transfers_we_never_offered_are_unknown() {
        let mut files = Files::new(8);
        let credit = wire::credit(Kind::FileAccept, 9, 10);
        assert_eq!(
            files.on_frame(credit.clone()).unwrap_err().code,
            Code::UNKNOWN_TRANSFER
        );
        let id = files.new_outgoing();
        let credit = wire::credit(Kind::FileAccept, id, 10);
        assert_eq!(
            files.on_frame(credit).unwrap(),
            FileEvent::Credit {
                id,
                credit: 10,
                accepted: true
            }
        );
    }
}
