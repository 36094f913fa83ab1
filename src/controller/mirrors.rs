//! The mirrors of mirrored shadows: one per shadow, kept across recompiles
//! of the routing table while its backend and settings stay the same (so
//! its queue and workers do). Dropping a mirror stops its workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::model::{ComparePolicy, ShadowSettings};
use crate::proxy::{Mirror, MirrorSettings};
use crate::shadow::ShadowStats;

type Key = (String, String);

pub(super) struct Mirrors {
    entries: Mutex<HashMap<Key, MirrorEntry>>,
    pub(super) settings: MirrorSettings,
}

struct MirrorEntry {
    backend: Arc<Backend>,
    shadow: ShadowSettings,
    compare: ComparePolicy,
    mirror: Arc<Mirror>,
}

/// One recompile's pass over the mirrors: the ones it asks for are kept
/// (or started); the rest stop when it ends.
pub(super) struct Rebuild<'a> {
    entries: MutexGuard<'a, HashMap<Key, MirrorEntry>>,
    kept: HashMap<Key, MirrorEntry>,
    settings: &'a MirrorSettings,
}

impl Mirrors {
    pub(super) fn new(settings: MirrorSettings) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            settings,
        }
    }

    pub(super) fn rebuild(&self) -> Rebuild<'_> {
        Rebuild {
            entries: self.entries.lock().unwrap_or_else(|p| p.into_inner()),
            kept: HashMap::new(),
            settings: &self.settings,
        }
    }
}

impl Rebuild<'_> {
    /// The mirror of shadow `key` on `backend`: the one it has while
    /// nothing changed, else a new one.
    pub(super) fn mirror(
        &mut self,
        key: Key,
        backend: &Arc<Backend>,
        shadow: &ShadowSettings,
        compare: &ComparePolicy,
        stats: impl FnOnce() -> Arc<Mutex<ShadowStats>>,
    ) -> Arc<Mirror> {
        let entry = match self.entries.remove(&key) {
            Some(e)
                if Arc::ptr_eq(&e.backend, backend)
                    && e.shadow == *shadow
                    && e.compare == *compare =>
            {
                e
            }
            old => {
                // Same shadow, new settings: the old mirror's queued
                // copies still go out.
                if let Some(old) = old.filter(|e| Arc::ptr_eq(&e.backend, backend)) {
                    old.mirror.retire();
                }
                MirrorEntry {
                    backend: Arc::clone(backend),
                    shadow: shadow.clone(),
                    compare: compare.clone(),
                    mirror: Mirror::start(
                        Arc::clone(backend),
                        shadow,
                        compare,
                        stats(),
                        self.settings,
                    ),
                }
            }
        };
        let mirror = Arc::clone(&entry.mirror);
        self.kept.insert(key, entry);
        mirror
    }

    /// Keeps the mirrors asked for; those left behind stop their workers
    /// as they drop.
    pub(super) fn finish(mut self) {
        *self.entries = std::mem::take(&mut self.kept);
    }
}
