use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{
    ComparePolicy, ModelError, Revision, Role, ServiceName, ShadowSettings, parse_version,
};
use crate::shadow::{ShadowReport, ShadowStats};

/// Each shadow's running counts, by (service, version). They outlive the
/// shadow role (a report is still there after promotion) and are saved to
/// the store so that the summary counts survive a restart.
#[derive(Default)]
pub struct ShadowLedger {
    stats: Mutex<HashMap<Key, Arc<Mutex<ShadowStats>>>>,
    /// What was last saved, to skip unchanged summaries.
    saved: Mutex<HashMap<Key, SavedMark>>,
}

/// (service, version)
type Key = (String, String);
/// The counts that show a summary changed: mirrored, compared, dropped or
/// too large, shadow errors, noise samples (recorded after the comparison
/// they belong to).
type SavedMark = (u64, u64, u64, u64, u64);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShadowLedger {
    /// The counts of one shadow, created empty on first use.
    pub fn stats(&self, service: &str, version: &str) -> Arc<Mutex<ShadowStats>> {
        let mut map = lock(&self.stats);
        Arc::clone(
            map.entry((service.to_owned(), version.to_owned()))
                .or_default(),
        )
    }

    pub fn load(&self, saved: Vec<(String, String, String)>) {
        let mut map = lock(&self.stats);
        for (service, version, json) in saved {
            match serde_json::from_str::<ShadowStats>(&json) {
                Ok(stats) => {
                    map.insert((service, version), Arc::new(Mutex::new(stats)));
                }
                Err(error) => {
                    tracing::warn!(%service, %version, %error, "unreadable shadow summary ignored")
                }
            }
        }
    }

    /// Reports of one service's shadows (one version, or every one), or of
    /// every shadow when `service` is `None`.
    fn reports(&self, service: Option<&str>, version: Option<&str>) -> Vec<ShadowReport> {
        let map = lock(&self.stats);
        let mut reports: Vec<ShadowReport> = map
            .iter()
            .filter(|((s, v), _)| {
                service.is_none_or(|want| want == s) && version.is_none_or(|want| want == v)
            })
            .map(|((s, v), stats)| lock(stats).report(s, v))
            .collect();
        reports.sort_by(|a, b| (&a.service, &a.version).cmp(&(&b.service, &b.version)));
        reports
    }

    /// Summaries that changed since they were last saved.
    fn changed(&self) -> Vec<(String, String, String)> {
        let map = lock(&self.stats);
        let mut saved = lock(&self.saved);
        let mut out = Vec::new();
        for (key, stats) in map.iter() {
            let stats = lock(stats);
            let mark = (
                stats.mirrored,
                stats.compared,
                stats.dropped + stats.too_large,
                stats.shadow_errors,
                stats.noise_compared,
            );
            if saved.get(key) != Some(&mark) {
                if let Ok(json) = serde_json::to_string(&stats.summary()) {
                    out.push((key.0.clone(), key.1.clone(), json));
                    saved.insert(key.clone(), mark);
                }
            }
        }
        out
    }
}

impl Controller {
    /// Changes how a shadow is mirrored to: on/off, sample, methods.
    pub async fn set_shadow(
        &self,
        service: &ServiceName,
        version: &str,
        settings: ShadowSettings,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        let version = parse_version(version)?;
        self.change(service, base_revision, actor, |current| {
            let describe = settings.describe();
            let next = current.state.set_shadow(service, &version, settings)?;
            if next.role_of(&version) != Some(Role::Shadow) {
                tracing::info!(%service, %version, "shadow settings stored; they apply while the release is a shadow");
            }
            Ok(Change::new(format!("shadow {version}: {describe}"), next))
        })
        .await
    }

    /// Changes how the service's shadows are compared with main.
    pub async fn set_compare(
        &self,
        service: &ServiceName,
        policy: ComparePolicy,
        base_revision: Option<u64>,
        actor: &str,
    ) -> Result<Revision> {
        self.change(service, base_revision, actor, |current| {
            let next = current.state.set_compare(policy)?;
            Ok(Change::new("shadow comparison settings", next))
        })
        .await
    }

    /// The shadow reports of a service (one version, or every one).
    pub fn shadow_reports(
        &self,
        service: &ServiceName,
        version: Option<&str>,
    ) -> Result<Vec<ShadowReport>> {
        let current = self.require(service)?;
        let version = version.map(parse_version).transpose()?;
        if let Some(v) = &version {
            let known =
                current.state.releases.contains_key(v) || self.store.release(service, v)?.is_some();
            if !known {
                return Err(ModelError::UnknownRelease {
                    service: service.to_string(),
                    version: v.to_string(),
                    known: "see `switchyard ls`".into(),
                }
                .into());
            }
        }
        let version = version.map(|v| v.to_string());
        Ok(self
            .shadows
            .reports(Some(service.as_str()), version.as_deref()))
    }

    /// Every shadow's report, for metrics.
    pub fn all_shadow_reports(&self) -> Vec<ShadowReport> {
        self.shadows.reports(None, None)
    }

    /// Saves the shadow summaries that changed.
    pub fn save_shadow_stats(&self) {
        for (service, version, json) in self.shadows.changed() {
            if let Err(error) = self.node_store.save_shadow_stats(&service, &version, &json) {
                tracing::warn!(%service, %version, %error, "cannot save shadow summary");
            }
        }
    }
}
