use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Controller;
use super::change::Change;
use crate::error::Result;
use crate::model::{
    ComparePolicy, ModelError, Revision, Role, ServiceName, ShadowSettings, now_millis,
    parse_version,
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
                .or_insert_with(|| Arc::new(Mutex::new(ShadowStats::starting(now_millis())))),
        )
    }

    /// Ends the current window of one service's shadows (one version, or
    /// every one) and starts a new, empty one at `now`. Returns the ended
    /// windows' reports. The mirrors keep counting into the same shared
    /// counts, now the new window's.
    fn reset(&self, service: &str, version: Option<&str>, now: u64) -> Vec<ShadowReport> {
        let map = lock(&self.stats);
        let mut ended: Vec<ShadowReport> = map
            .iter()
            .filter(|((s, v), _)| service == s && version.is_none_or(|want| want == v))
            .map(|((s, v), stats)| {
                let old = std::mem::replace(&mut *lock(stats), ShadowStats::starting(now));
                let mut report = old.report(s, v);
                report.until = Some(now);
                report
            })
            .collect();
        ended.sort_by(|a, b| a.version.cmp(&b.version));
        ended
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
                stats.shadow_errors(),
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
        let version = self.known_shadow_version(service, version)?;
        Ok(self
            .shadows
            .reports(Some(service.as_str()), version.as_deref()))
    }

    /// Ends the current window of the service's shadow reports (one
    /// version, or every one) and starts a new one. The ended windows go
    /// to the history (`shadow_history`) and an event names them.
    pub fn reset_shadow_reports(
        &self,
        service: &ServiceName,
        version: Option<&str>,
        actor: &str,
    ) -> Result<Vec<ShadowReport>> {
        let version = self.known_shadow_version(service, version)?;
        let ended = self
            .shadows
            .reset(service.as_str(), version.as_deref(), now_millis());
        // The new, empty windows are saved at once, so that a restart does
        // not bring the ended counts back.
        self.save_shadow_stats();
        for report in &ended {
            match serde_json::to_string(report) {
                Ok(json) => {
                    if let Err(error) =
                        self.node_store
                            .add_shadow_window(service.as_str(), &report.version, &json)
                    {
                        tracing::warn!(%service, version = %report.version, %error, "cannot keep the ended shadow window");
                    }
                }
                Err(error) => tracing::warn!(%service, %error, "cannot encode a shadow window"),
            }
            let rate = report
                .match_rate
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
            self.record_event(
                service.as_str(),
                "shadow-reset",
                &format!(
                    "shadow report of {} reset by {actor}: the ended window (mirrored {}, compared {}, matched {} ({rate}), shadow errors {}) is in `switchyard shadow report {service} --history`",
                    report.version,
                    report.mirrored,
                    report.compared,
                    report.matched,
                    report.shadow_errors
                ),
                serde_json::json!({ "version": report.version, "since": report.since, "until": report.until }),
            );
        }
        Ok(ended)
    }

    /// Ended windows of the service's shadow reports, newest first.
    pub fn shadow_history(
        &self,
        service: &ServiceName,
        version: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ShadowReport>> {
        let version = self.known_shadow_version(service, version)?;
        let windows =
            self.node_store
                .shadow_windows(service.as_str(), version.as_deref(), limit)?;
        Ok(windows
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(report) => Some(report),
                Err(error) => {
                    tracing::warn!(%service, %error, "unreadable shadow window skipped");
                    None
                }
            })
            .collect())
    }

    /// The service must exist; a version named must be one of its releases.
    fn known_shadow_version(
        &self,
        service: &ServiceName,
        version: Option<&str>,
    ) -> Result<Option<String>> {
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
        Ok(version.map(|v| v.to_string()))
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
