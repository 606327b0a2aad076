//! State that outlives a configuration generation. A reload builds every
//! pool, connector and TLS config anew from the config, but a backend that
//! is still the same backend (same pool, address, protocol, TLS settings)
//! must keep what was learned of it (health verdicts, ejections, drains,
//! pooled connections), and a listener its session-ticket keys. Each such
//! piece is looked up here by its type and a key naming that identity; it
//! lives as long as some generation holds it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

type Held = Weak<dyn Any + Send + Sync>;

/// Keyed, weakly held values shared by consecutive generations.
#[derive(Default)]
pub struct Carry {
    live: Mutex<HashMap<(TypeId, String), Held>>,
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carry").finish_non_exhaustive()
    }
}

impl Carry {
    /// The `T` a live generation holds under `key`, or a new one from
    /// `make`, kept for the next generation.
    pub fn get_or_make<T: Any + Send + Sync>(
        &self,
        key: String,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        self.try_get_or_make(key, || Ok::<_, std::convert::Infallible>(make()))
            .unwrap_or_else(|never| match never {})
    }

    /// As `get_or_make`, for a `make` that can fail (nothing is kept then).
    pub fn try_get_or_make<T: Any + Send + Sync, E>(
        &self,
        key: String,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let id = (TypeId::of::<T>(), key);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let found = live
            .get(&id)
            .and_then(Weak::upgrade)
            .and_then(|held| held.downcast::<T>().ok());
        if let Some(found) = found {
            return Ok(found);
        }
        // Forget what no generation holds any more, so the table stays as
        // large as the configuration, however many reloads there were.
        live.retain(|_, v| v.strong_count() > 0);
        let made = Arc::new(make()?);
        let held: Arc<dyn Any + Send + Sync> = made.clone();
        live.insert(id, Arc::downgrade(&held));
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_then_forgotten() {
        let c = Carry::default();
        let a = c.get_or_make("k".into(), || 1u32);
        let b = c.get_or_make("k".into(), || 2u32);
        assert!(Arc::ptr_eq(&a, &b));
        // Same key, other type: another value.
        assert_eq!(*c.get_or_make("k".into(), || 7u64), 7);
        drop((a, b));
        assert_eq!(*c.get_or_make("k".into(), || 3u32), 3);
        let failed: Result<Arc<u8>, &str> = c.try_get_or_make("f".into(), || Err("no"));
        assert!(failed.is_err());
        assert_eq!(*c.get_or_make("f".into(), || 5u8), 5);
    }
}
