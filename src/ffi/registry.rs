//! The handle registry: live objects by id. Ids come from one counter and are never reused, so a
//! stale id finds nothing (refused) instead of someone else's object. Calls take an `Arc` out
//! of the map and work on it without holding the map's lock, so a release on one thread while
//! another thread still runs on the object only drops the map's reference.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{Fail, FfiResult, QfStatus};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Live objects of one handle type.
pub(crate) struct Registry<T> {
    map: Mutex<Option<HashMap<u64, Arc<T>>>>,
    kind: &'static str,
}

impl<T> Registry<T> {
    pub(crate) const fn new(kind: &'static str) -> Self {
        Registry {
            map: Mutex::new(None),
            kind,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<u64, Arc<T>>) -> R) -> R {
        // A panic while the lock was held cannot leave the map half-updated (each use is one
        // insert, get or remove), so a poisoned lock is safe to take over.
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashMap::new))
    }

    /// Register `v`; returns its new id (never 0, never reused).
    pub(crate) fn insert(&self, v: T) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.with(|m| m.insert(id, Arc::new(v)));
        id
    }

    /// The live object `id`.
    pub(crate) fn get(&self, id: u64) -> FfiResult<Arc<T>> {
        self.with(|m| m.get(&id).cloned())
            .ok_or_else(|| self.invalid(id))
    }

    /// Release `id`: `Ok` for 0 (the "none" handle) and for a live id; a stale id is refused.
    pub(crate) fn remove(&self, id: u64) -> FfiResult {
        if id == 0 {
            return Ok(());
        }
        self.with(|m| m.remove(&id))
            .map(drop)
            .ok_or_else(|| self.invalid(id))
    }

    fn invalid(&self, id: u64) -> Fail {
        Fail(
            QfStatus::QF_ERR_INVALID_HANDLE,
            if id == 0 {
                format!("the {} handle is empty (0)", self.kind)
            } else {
                format!(
                    "{} handle {id} is not live (never created, or already released)",
                    self.kind
                )
            },
        )
    }
}
