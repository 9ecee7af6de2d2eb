//! [`Session`]: typed per-connection data, one value per type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A per-connection store of typed values: at most one value of each type.
///
/// Use a newtype per piece of data (`struct Nick(String)`). The store lives as long as the
/// connection's [`Peer`](crate::Peer) handles.
#[derive(Default)]
pub struct Session {
    values: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, HashMap<TypeId, Box<dyn Any + Send + Sync>>> {
        // A panicking user closure cannot leave the map itself inconsistent.
        self.values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `value`, returning the previous value of the same type.
    pub fn insert<T: Any + Send + Sync>(&self, value: T) -> Option<T> {
        let old = self.lock().insert(TypeId::of::<T>(), Box::new(value));
        old.and_then(|old| old.downcast().ok().map(|boxed| *boxed))
    }

    /// A clone of the stored value of type `T`.
    pub fn get<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        self.lock()
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }

    /// Runs `f` on the stored value of type `T`, if there is one. Do not touch the same session
    /// from inside `f`.
    pub fn with<T: Any + Send + Sync, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.lock()
            .get_mut(&TypeId::of::<T>())
            .and_then(|v| v.downcast_mut::<T>())
            .map(f)
    }

    /// Removes and returns the stored value of type `T`.
    pub fn remove<T: Any + Send + Sync>(&self) -> Option<T> {
        let old = self.lock().remove(&TypeId::of::<T>());
        old.and_then(|old| old.downcast().ok().map(|boxed| *boxed))
    }

    /// Whether a value of type `T` is stored.
    pub fn contains<T: Any + Send + Sync>(&self) -> bool {
        self.lock().contains_key(&TypeId::of::<T>())
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("values", &self.lock().len())
            .finish()
    }
}
