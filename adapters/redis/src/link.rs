//! Connections to Redis: opened on demand, dropped when they fail, opened again after a pause
//! that grows (with jitter) up to a bound.
//!
//! This module owns connecting and the backoff; it must not know what is sent. Each task has
//! its own link: the reader's blocks in `XREAD`, so it never shares a socket with commands
//! that must not wait behind it.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

/// One connection to Redis, shared by clones, replaced when it fails.
pub(crate) struct Link {
    client: Client,
    config: AsyncConnectionConfig,
    /// The connection and its generation (so that a late failure report of an old connection
    /// does not drop its replacement).
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl Link {
    /// A link whose commands may take `response_timeout` to be answered.
    pub(crate) fn new(client: Client, connect_timeout: Duration, response_timeout: Duration) -> Link {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        Link {
            client,
            config,
            current: Mutex::new((0, None)),
        }
    }

    /// The connection, opened now if there is none; with its generation, and whether it is new.
    pub(crate) async fn get(&self) -> Result<(u64, MultiplexedConnection, bool), RedisError> {
        {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if let (generation, Some(connection)) = &*current {
                return Ok((*generation, connection.clone(), false));
            }
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let (generation, Some(existing)) = &*current {
            // Another task connected meanwhile: one connection is enough.
            return Ok((*generation, existing.clone(), false));
        }
        current.0 += 1;
        current.1 = Some(connection.clone());
        Ok((current.0, connection, true))
    }

    /// The connection of `generation` failed: the next `get` opens a new one.
    pub(crate) fn broken(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 == generation {
            current.1 = None;
        }
    }
}

/// Pauses between attempts: doubling from `min` to `max`, each with up to half of it as
/// jitter so that nodes that lost Redis together do not come back in step.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
            seed: seed | 1,
        }
    }

    /// The next pause.
    pub(crate) fn pause(&mut self) -> Duration {
        // xorshift: cheap jitter, no need for anything stronger.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = base / 2;
        let jitter = half.mul_f64((self.seed % 1000) as f64 / 1000.0);
        half + jitter
    }

    /// A success: start from `min` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_bound_and_start_over_after_a_success() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(400));
        let mut backoff = Backoff::new(min, max, 42);
        let pauses: Vec<Duration> = (0..5).map(|_| backoff.pause()).collect();
        for (pause, base) in pauses.iter().zip([100, 200, 400, 400, 400]) {
            let base = Duration::from_millis(base);
            assert!(*pause >= base / 2 && *pause <= base, "{pause:?} for {base:?}");
        }
        backoff.reset();
        assert!(backoff.pause() <= min);
    }
}
