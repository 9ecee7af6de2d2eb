//! A value that tasks wait on until it satisfies them: the session's end, the handshake's state.
//!
//! Like a `tokio::sync::watch` channel without its allocation (a few hundred octets per
//! channel, twice per peer): the value and a [`Notify`] live inline in the session or the
//! connection. It owns nothing else.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Signal<T> {
    value: Mutex<T>,
    changed: Notify,
}

impl<T: Clone> Signal<T> {
    pub(crate) fn new(value: T) -> Signal<T> {
        Signal {
            value: Mutex::new(value),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current value.
    pub(crate) fn get(&self) -> T {
        self.lock().clone()
    }

    /// Replaces the value and wakes every waiter.
    pub(crate) fn set(&self, value: T) {
        *self.lock() = value;
        self.changed.notify_waiters();
    }

    /// Lets `change` edit the value; wakes the waiters if it says it changed something.
    pub(crate) fn update(&self, change: impl FnOnce(&mut T) -> bool) -> bool {
        let changed = change(&mut self.lock());
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// Waits until `ready` holds for the value, and returns that value.
    pub(crate) async fn wait_for(&self, ready: impl Fn(&T) -> bool) -> T {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before looking: a change after the look wakes us.
            changed.as_mut().enable();
            {
                let value = self.lock();
                if ready(&value) {
                    return value.clone();
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_see_the_change_they_wait_for() {
        let signal = Arc::new(Signal::new(0u32));
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.wait_for(|v| *v >= 2).await }
        });
        tokio::task::yield_now().await;
        signal.set(1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(signal.update(|v| {
            *v = 2;
            true
        }));
        assert_eq!(waiter.await.unwrap(), 2);
        assert_eq!(signal.wait_for(|v| *v == 2).await, 2);
    }
}
