//! What a server counts, through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): connections, messages and octets, broadcast fan-out, slow consumers, refusals,
//! resumes, files. Without the feature every method is empty and compiles away.
//!
//! Handles are registered once per server when it starts, with the recorder installed then,
//! so the hot path is an atomic add and never a registry lookup. Labels are bounded sets
//! (transport, code name, direction, outcome): never a peer, room or address. This module owns
//! the names; it must not decide anything.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `truflux_connections` | gauge | `transport` |
//! | `truflux_messages_received_total`, `truflux_messages_sent_total` | counter | |
//! | `truflux_bytes_received_total`, `truflux_bytes_sent_total` | counter | |
//! | `truflux_broadcast_fanout_seconds` | histogram | |
//! | `truflux_slow_consumer_closes_total` | counter | |
//! | `truflux_queue_full_total` | counter | |
//! | `truflux_handshake_failures_total` | counter | `code` |
//! | `truflux_auth_failures_total` | counter | `code` |
//! | `truflux_resumes_total`, `truflux_resume_failures_total` | counter | |
//! | `truflux_file_transfers_total` | counter | `direction`, `outcome` |
//! | `truflux_file_bytes_total` | counter | `direction` |

use crate::error::Code;
use crate::frame::Frame;
use crate::transport::TransportKind;

/// A transfer's direction, for the file metrics.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Sent,
    Received,
}

/// A server's meters; the default (clients, or without the feature) counts nothing.
#[derive(Clone, Default)]
pub(crate) struct Meters {
    #[cfg(feature = "metrics")]
    handles: Option<std::sync::Arc<imp::Handles>>,
}

/// Counts one live connection until dropped.
pub(crate) struct Live {
    #[cfg(feature = "metrics")]
    gauge: Option<metrics::Gauge>,
}

impl Drop for Live {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some(gauge) = &self.gauge {
            gauge.decrement(1.0);
        }
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    pub(super) struct Handles {
        pub(super) tcp: Gauge,
        pub(super) websocket: Gauge,
        pub(super) messages_in: Counter,
        pub(super) messages_out: Counter,
        pub(super) bytes_in: Counter,
        pub(super) bytes_out: Counter,
        pub(super) fanout: Histogram,
        pub(super) slow: Counter,
        pub(super) queue_full: Counter,
        pub(super) resumes: Counter,
        pub(super) resume_failures: Counter,
    }

    impl Handles {
        pub(super) fn register() -> Handles {
            Handles {
                tcp: gauge!("truflux_connections", "transport" => "tcp"),
                websocket: gauge!("truflux_connections", "transport" => "websocket"),
                messages_in: counter!("truflux_messages_received_total"),
                messages_out: counter!("truflux_messages_sent_total"),
                bytes_in: counter!("truflux_bytes_received_total"),
                bytes_out: counter!("truflux_bytes_sent_total"),
                fanout: histogram!("truflux_broadcast_fanout_seconds"),
                slow: counter!("truflux_slow_consumer_closes_total"),
                queue_full: counter!("truflux_queue_full_total"),
                resumes: counter!("truflux_resumes_total"),
                resume_failures: counter!("truflux_resume_failures_total"),
            }
        }
    }
}

impl Meters {
    /// A server's meters, registered with the recorder installed now.
    pub(crate) fn server() -> Meters {
        Meters {
            #[cfg(feature = "metrics")]
            handles: Some(std::sync::Arc::new(imp::Handles::register())),
        }
    }

    /// A connection of `transport` is live until the guard drops.
    pub(crate) fn live(&self, transport: TransportKind) -> Live {
        #[cfg(feature = "metrics")]
        {
            let gauge = self.handles.as_ref().map(|h| match transport {
                TransportKind::WebSocket => h.websocket.clone(),
                _ => h.tcp.clone(),
            });
            if let Some(gauge) = &gauge {
                gauge.increment(1.0);
            }
            Live { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = transport;
            Live {}
        }
    }

    /// A frame arrived.
    #[inline]
    pub(crate) fn received(&self, frame: &Frame) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            if frame.kind.is_application() {
                h.messages_in.increment(1);
            }
            h.bytes_in.increment(wire_len(frame));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = frame;
    }

    /// Frames were written.
    #[inline]
    pub(crate) fn sent(&self, frames: &[Frame]) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            let messages = frames.iter().filter(|f| f.kind.is_application()).count();
            h.messages_out.increment(messages as u64);
            h.bytes_out.increment(frames.iter().map(wire_len).sum());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = frames;
    }

    /// When a broadcast started, if anyone measures it.
    #[inline]
    pub(crate) fn fanout_start(&self) -> Option<std::time::Instant> {
        #[cfg(feature = "metrics")]
        if self.handles.is_some() {
            return Some(std::time::Instant::now());
        }
        None
    }

    /// A broadcast that started at `start` has queued for every local peer.
    pub(crate) fn fanout_done(&self, start: Option<std::time::Instant>) {
        #[cfg(feature = "metrics")]
        if let (Some(h), Some(start)) = (&self.handles, start) {
            h.fanout.record(start.elapsed().as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = start;
    }

    /// A broadcast closed a slow consumer.
    pub(crate) fn slow_consumer(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.slow.increment(1);
        }
    }

    /// A send found the queue full.
    pub(crate) fn queue_full(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.queue_full.increment(1);
        }
    }

    /// An opening failed with `code`; `auth` when the token was the reason.
    pub(crate) fn refused(&self, code: Code, auth: bool) {
        #[cfg(feature = "metrics")]
        if self.handles.is_some() {
            let name = if auth {
                "truflux_auth_failures_total"
            } else {
                "truflux_handshake_failures_total"
            };
            metrics::counter!(name, "code" => code.name()).increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (code, auth);
    }

    /// A session resumed, or a resume was refused.
    pub(crate) fn resume(&self, ok: bool) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            if ok { &h.resumes } else { &h.resume_failures }.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = ok;
    }

    /// A transfer ended; `bytes` of content moved.
    pub(crate) fn file(&self, direction: Direction, finished: bool, bytes: u64) {
        #[cfg(feature = "metrics")]
        if self.handles.is_some() {
            let direction = match direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            };
            let outcome = if finished { "finished" } else { "failed" };
            metrics::counter!("truflux_file_transfers_total", "direction" => direction, "outcome" => outcome)
                .increment(1);
            metrics::counter!("truflux_file_bytes_total", "direction" => direction).increment(bytes);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (direction, finished, bytes);
    }
}

#[cfg(feature = "metrics")]
fn wire_len(frame: &Frame) -> u64 {
    let header = if frame.tag.is_some() {
        crate::frame::SECURE_HEADER_LEN
    } else {
        crate::frame::HEADER_LEN
    };
    (frame.payload.len() + header) as u64
}
