//! `GET /v1/services/{name}/trends`: each release's numbers over the last
//! minutes, a point every [`SAMPLE_EVERY`], for the dashboard's charts.
//! A task of its own reads every release's counters at each tick (the
//! proxy never waits for it); dropping [`Trends`] stops that task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::AppState;
use super::services::{ApiResult, service_name};
use crate::controller::Controller;
use crate::metrics::{Trend, TrendPoint};
use crate::model::{Role, now_millis};

/// How often every release's counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How far back the points go.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Trends of releases, by service and version.
type TrendMap = HashMap<(String, String), Trend>;

/// Every running release's recent points, kept up to date by a task.
pub struct Trends {
    releases: Arc<Mutex<TrendMap>>,
    sampler: AbortHandle,
}

impl Drop for Trends {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl Trends {
    /// Starts reading the controller's releases every [`SAMPLE_EVERY`].
    pub fn start(controller: Arc<Controller>) -> Arc<Self> {
        let releases = Arc::new(Mutex::new(TrendMap::new()));
        let sampler = tokio::spawn(sample(controller, Arc::clone(&releases))).abort_handle();
        Arc::new(Self { releases, sampler })
    }

    fn points(&self, service: &str, version: &str) -> Vec<TrendPoint> {
        let releases = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        releases
            .get(&(service.to_owned(), version.to_owned()))
            .map(|trend| trend.points().cloned().collect())
            .unwrap_or_default()
    }
}

/// At each tick, one point per running release; releases that stopped
/// running are forgotten, new ones count from their counters at the tick.
async fn sample(controller: Arc<Controller>, releases: Arc<Mutex<TrendMap>>) {
    let capacity = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize;
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    loop {
        ticks.tick().await;
        let seconds = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        let at = now_millis();
        let samples = controller.release_samples();
        let mut releases = releases.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = TrendMap::with_capacity(samples.len());
        for sample in samples {
            let key = (sample.service, sample.version);
            let trend = match releases.remove(&key) {
                Some(mut trend) => {
                    trend.record(sample.metrics, at, seconds);
                    trend
                }
                None => Trend::new(sample.metrics, capacity),
            };
            kept.insert(key, trend);
        }
        *releases = kept;
    }
}

/// A service's releases with their recent points.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceTrends {
    pub service: String,
    /// Seconds between two points.
    pub every_seconds: u64,
    /// Seconds the points go back at most.
    pub window_seconds: u64,
    pub releases: Vec<ReleaseTrend>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseTrend {
    pub version: String,
    pub role: Role,
    /// Oldest first; none yet for a release started in the last period.
    pub points: Vec<TrendPoint>,
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ServiceTrends> {
    let service = state.controller.service(&service_name(&name)?)?;
    let releases = service
        .releases
        .into_iter()
        .map(|release| ReleaseTrend {
            points: state.trends.points(&service.name, &release.version),
            version: release.version,
            role: release.role,
        })
        .collect();
    Ok(Json(ServiceTrends {
        every_seconds: SAMPLE_EVERY.as_secs(),
        window_seconds: WINDOW.as_secs(),
        service: service.name,
        releases,
    }))
}
