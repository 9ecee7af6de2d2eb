//! The security state of each direction of one connection, and the rules of PROTOCOL.md §9.3.
//!
//! This module owns which frames a keyed direction must protect, the receiving table (what a
//! frame that arrives plain or protected means in each state), the toggles as they reach the
//! wire, and rotation by records, octets and time. It seals and opens through
//! [`crate::security::record`] and must not touch the handshake, queues or IO.

use std::time::Instant;

use bytes::Bytes;

use crate::frame::{Frame, Kind};
use crate::security::handshake::{self, REKEY, SEC_OFF, SEC_ON};
use crate::security::record::{Opener, Sealer};
use crate::security::{RekeyPolicy, SecurityError};

/// Never more records than this under one key, whatever the policy says.
pub(crate) const MAX_RECORDS_PER_KEY: u64 = 1 << 32;
/// Never more payload octets than this under one key, whatever the policy says.
pub(crate) const MAX_BYTES_PER_KEY: u64 = 1 << 36;

/// Whether a keyed direction protects `kind` when it is plain: everything but application
/// and file frames (PROTOCOL.md §9.3).
fn always_protected(kind: Kind) -> bool {
    kind.is_control()
}

/// The direction this side sends. `repr(C)`: `secure`, which every frame reads, comes first
/// (see `Engine`).
#[repr(C)]
pub(crate) struct Tx {
    secure: bool,
    /// Boxed: a plain direction reads only whether there is one.
    sealer: Option<Box<Sealer>>,
    /// Payload octets sealed under the current key.
    bytes: u64,
    /// When the current key was installed.
    since: Option<Instant>,
    policy: RekeyPolicy,
}

/// What sealing one frame changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// The direction's secure flag after a `SEC_ON` or `SEC_OFF` marker (also for a marker
    /// that changed nothing).
    pub(crate) toggle: Option<bool>,
}

impl Tx {
    pub(crate) fn new(policy: RekeyPolicy) -> Tx {
        Tx {
            sealer: None,
            secure: false,
            policy,
            bytes: 0,
            since: None,
        }
    }

    pub(crate) fn is_keyed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Whether frames go out protected (a `SEC_ON` has been sealed and no `SEC_OFF` since).
    pub(crate) fn is_secure(&self) -> bool {
        self.secure
    }

    /// The direction is keyed from the next frame on.
    pub(crate) fn install(&mut self, sealer: impl Into<Box<Sealer>>, now: Instant) {
        self.sealer = Some(sealer.into());
        self.bytes = 0;
        self.since = Some(now);
    }

    /// Whether the frame would leave unchanged (plain): no keys, or an application or file
    /// frame of a plain direction. Lets a whole plain batch skip `push`.
    pub(crate) fn passes_plain(&self, frame: &Frame) -> bool {
        self.sealer.is_none() || (!self.secure && !always_protected(frame.kind))
    }

    /// Appends `frame` to `out` as the direction's rules say: plain, or sealed (with a `REKEY`
    /// after it when the policy's limit is reached). A `SEC_ON` / `SEC_OFF` marker turns the
    /// direction; a redundant one is dropped.
    pub(crate) fn push(
        &mut self,
        frame: Frame,
        out: &mut Vec<Frame>,
        now: Instant,
    ) -> Result<Pushed, SecurityError> {
        let marker = match (frame.kind, frame.id) {
            (Kind::Security, SEC_ON) => Some(true),
            (Kind::Security, SEC_OFF) => Some(false),
            _ => None,
        };
        if let Some(on) = marker {
            if on == self.secure {
                return Ok(Pushed { toggle: Some(on) });
            }
            if self.sealer.is_none() {
                return Err(SecurityError::Handshake("a toggle before the key exchange"));
            }
        }
        if self.passes_plain(&frame) {
            out.push(frame);
            return Ok(Pushed::default());
        }
        self.seal(frame, out, now)?;
        if let Some(on) = marker {
            self.secure = on;
        }
        Ok(Pushed { toggle: marker })
    }

    fn seal(&mut self, frame: Frame, out: &mut Vec<Frame>, now: Instant) -> Result<(), SecurityError> {
        let sealer = self
            .sealer
            .as_mut()
            .ok_or(SecurityError::Handshake("no keys to seal with"))?;
        self.bytes = self.bytes.saturating_add(frame.payload.len() as u64);
        out.push(sealer.seal(frame)?);
        if self.rotation_due(now) {
            let sealer = self.sealer.as_mut().ok_or(SecurityError::Handshake("no keys"))?;
            out.push(sealer.seal(handshake::frame(REKEY, Bytes::new()))?);
            **sealer = sealer.next();
            self.bytes = 0;
            self.since = Some(now);
        }
        Ok(())
    }

    fn rotation_due(&self, now: Instant) -> bool {
        let Some(sealer) = &self.sealer else { return false };
        let records = self.policy.records.min(MAX_RECORDS_PER_KEY);
        let bytes = self.policy.bytes.min(MAX_BYTES_PER_KEY);
        let expired = match (self.policy.interval, self.since) {
            (Some(interval), Some(since)) => now.saturating_duration_since(since) >= interval,
            _ => false,
        };
        self.bytes >= bytes || sealer.sequence() >= records || expired
    }

    /// Seals a frame that must go out now, outside the queue (a close): protected whenever the
    /// direction is keyed.
    pub(crate) fn seal_now(&mut self, frame: Frame, now: Instant) -> Result<Frame, SecurityError> {
        let mut out = Vec::with_capacity(2);
        if self.sealer.is_none() {
            return Ok(frame);
        }
        self.seal(frame, &mut out, now)?;
        // A rekey after the last record is harmless: nothing follows a close.
        Ok(out.swap_remove(0))
    }
}

/// The direction this side receives.
#[derive(Default)]
pub(crate) struct Rx {
    opener: Option<Opener>,
    secure: bool,
}

/// What a frame that passed the receiving rules is.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// A frame to handle (opened if it was protected).
    Frame(Frame),
    /// A plain `CLOSE` in a keyed direction: the connection counts as lost, and the code is not
    /// believed.
    Lost,
}

impl Rx {
    pub(crate) fn is_keyed(&self) -> bool {
        self.opener.is_some()
    }

    pub(crate) fn is_secure(&self) -> bool {
        self.secure
    }

    /// The direction is keyed from the next frame on.
    pub(crate) fn install(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// Applies PROTOCOL.md §9.3's receiving table to one frame.
    pub(crate) fn accept(&mut self, frame: Frame) -> Result<Arrival, SecurityError> {
        if frame.tag.is_some() {
            let opener = self.opener.as_mut().ok_or(SecurityError::BadRecord(
                "protected record before the key exchange",
            ))?;
            let frame = opener.open(frame)?;
            if !self.secure && !always_protected(frame.kind) {
                return Err(SecurityError::BadRecord(
                    "protected application frame in a plain direction",
                ));
            }
            return Ok(Arrival::Frame(frame));
        }
        let toggle = frame.kind == Kind::Security && matches!(frame.id, SEC_ON | SEC_OFF | REKEY);
        if self.opener.is_none() {
            if toggle {
                return Err(SecurityError::BadRecord(
                    "security control record is not protected",
                ));
            }
            return Ok(Arrival::Frame(frame));
        }
        if frame.kind == Kind::Close {
            return Ok(Arrival::Lost);
        }
        if self.secure || always_protected(frame.kind) {
            return Err(SecurityError::UnexpectedPlaintext);
        }
        Ok(Arrival::Frame(frame))
    }

    /// The peer's authenticated toggle: `SEC_ON` (true) or `SEC_OFF` (false).
    pub(crate) fn toggle(&mut self, on: bool) {
        self.secure = on;
    }

    /// The peer's authenticated `REKEY`: the next record uses the next keys.
    pub(crate) fn advance(&mut self) {
        if let Some(opener) = self.opener.as_mut() {
            opener.advance();
        }
    }
}
