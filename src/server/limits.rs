//! Admission limits: connections in the opening exchange, connections in all, connections per
//! source address, and new connections per source address per second.
//!
//! This module owns the counters and the per-address windows; the admission asks it for a slot
//! before it reads anything from a new connection. It must not touch sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many tracked addresses, windows that ended are dropped.
const PRUNE_AT: usize = 4096;

/// The server's admission counters.
#[derive(Default)]
pub(crate) struct Limits {
    opening: Arc<AtomicUsize>,
    rates: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    addresses: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection was turned away before its opening.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Connections,
    Openings,
    Rate,
    Address,
}

impl Full {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Full::Connections => "server is at its connection limit",
            Full::Openings => "server is at its limit of openings in progress",
            Full::Rate => "too many new connections from this address",
            Full::Address => "too many connections from this address",
        }
    }
}

/// A connection in its opening; counts until dropped.
pub(crate) struct Opening {
    count: Arc<AtomicUsize>,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection from one address; counts until dropped.
pub(crate) struct Address {
    from: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Address {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.from) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.from);
            }
        }
    }
}

impl Limits {
    /// Counts a connection from `from` for as long as the returned guard lives, if there is a
    /// limit; refused beyond `max`.
    pub(crate) fn address(&self, from: IpAddr, max: Option<usize>) -> Result<Option<Address>, Full> {
        let Some(max) = max else { return Ok(None) };
        let mut counts = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(from).or_insert(0);
        if *count >= max {
            return Err(Full::Address);
        }
        *count += 1;
        Ok(Some(Address {
            from,
            counts: self.addresses.clone(),
        }))
    }

    /// A slot for a new connection from `from`, given `connected` peers and the limits.
    pub(crate) fn admit(
        &self,
        from: IpAddr,
        connected: usize,
        max_connections: usize,
        max_opening: usize,
        per_second: Option<u32>,
    ) -> Result<Opening, Full> {
        let opening = self.opening.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Opening {
            count: self.opening.clone(),
        };
        if opening > max_opening {
            return Err(Full::Openings);
        }
        if connected + opening > max_connections {
            return Err(Full::Connections);
        }
        if let Some(limit) = per_second {
            self.count_rate(from, limit, Instant::now())?;
        }
        Ok(slot)
    }

    fn count_rate(&self, from: IpAddr, limit: u32, now: Instant) -> Result<(), Full> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        if rates.len() > PRUNE_AT {
            rates.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let (start, count) = rates.entry(from).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > limit {
            return Err(Full::Rate);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_and_connections_are_counted_together() {
        let limits = Limits::default();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let first = limits.admit(ip, 0, 10, 2, None).unwrap();
        let _second = limits.admit(ip, 0, 10, 2, None).unwrap();
        assert_eq!(limits.admit(ip, 0, 10, 2, None).err(), Some(Full::Openings));
        drop(first);
        assert_eq!(limits.admit(ip, 9, 10, 2, None).err(), Some(Full::Connections));
        assert!(limits.admit(ip, 8, 10, 2, None).is_ok());
    }

    #[test]
    fn connections_per_address_are_counted_while_their_guards_live() {
        let limits = Limits::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = limits.address(a, Some(2)).unwrap();
        let _second = limits.address(a, Some(2)).unwrap();
        assert_eq!(limits.address(a, Some(2)).err(), Some(Full::Address));
        assert!(limits.address(b, Some(2)).is_ok(), "per address");
        drop(first);
        assert!(limits.address(a, Some(2)).is_ok());
        assert!(limits.address(a, None).unwrap().is_none(), "no limit, no count");
    }

    #[test]
    fn a_source_beyond_its_rate_is_refused_within_the_second() {
        let limits = Limits::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let now = Instant::now();
        assert!(limits.count_rate(a, 2, now).is_ok());
        assert!(limits.count_rate(a, 2, now).is_ok());
        assert_eq!(limits.count_rate(a, 2, now), Err(Full::Rate));
        assert!(
            limits.count_rate(b, 2, now).is_ok(),
            "another address has its own window"
        );
        assert!(limits.count_rate(a, 2, now + Duration::from_secs(1)).is_ok());
    }
}
