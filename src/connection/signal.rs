//! What tasks wait on: a value until it satisfies them ([`Signal`]: the session's end, the
//! handshake's state), and the connection task's own stop flags ([`TaskToken`]).
//!
//! [`Signal`] is a `tokio::sync::watch` channel without its allocation (a few hundred octets
//! per channel, twice per peer): the value and a [`Notify`] live inline in the session or the
//! connection. [`TaskToken`] is a cancellation token without locks, for waiters in one task.
//! This module owns nothing else.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// A one-way flag that anyone may set and only the connection's own task waits on.
///
/// The read and write loops look at their stop flags on every frame; a
/// `tokio_util::sync::CancellationToken` takes a mutex for each look and each wait, which
/// showed in profiles with many busy peers. Here a look is an atomic load and a wait registers
/// the task's waker in one slot, which is why every waiter must belong to the same task (the
/// connection's, whose loops share one waker). Other tasks wait on `Conn::done` instead.
#[derive(Default)]
pub(crate) struct TaskToken {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl TaskToken {
    /// Sets the flag and wakes the waiting task. Idempotent.
    pub(crate) fn cancel(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once the flag is set. Only the connection's task may await it.
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_cancelled() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Set between the look and the registration: the wake may have found no waker.
            if self.is_cancelled() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

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
    #[cfg(test)]
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
    use super::{Signal, TaskToken};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_task_token_wakes_its_task_from_another() {
        let token = Arc::new(TaskToken::default());
        let waiter = tokio::spawn({
            let token = token.clone();
            async move {
                // Two waits in one task share the waker slot; both end.
                tokio::join!(token.cancelled(), token.cancelled());
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        std::thread::spawn({
            let token = token.clone();
            move || token.cancel()
        })
        .join()
        .unwrap();
        waiter.await.unwrap();
        assert!(token.is_cancelled());
        token.cancelled().await;
    }

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
