//! Events: recorded in the store and posted as JSON to the configured
//! webhooks, retried with backoff by a task of their own, so a slow or
//! dead receiver never holds up a rollout. A single serve posts each event
//! as it records it; in a fleet the notifier has no webhooks and the
//! leading node posts every node's events from the store instead
//! (`fleet::webhooks`).

use std::time::Duration;

use tokio::sync::mpsc;

use super::Controller;
use crate::model::Event;

/// Events waiting to be posted; more are dropped (they stay in the store).
const QUEUE: usize = 1024;
/// Tries per webhook and event.
const ATTEMPTS: u32 = 5;

/// Posts events to webhooks in the order they happened.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Event>>,
}

impl Notifier {
    /// A notifier for `urls` (none: events are only recorded).
    pub fn start(urls: Vec<String>) -> Self {
        if urls.is_empty() {
            return Self { tx: None };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(post_all(rx, urls));
        Self { tx: Some(tx) }
    }

    fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                tracing::warn!(
                    "event webhook queue full; an event was not posted (it is recorded)"
                );
            }
        }
    }
}

async fn post_all(mut rx: mpsc::Receiver<Event>, urls: Vec<String>) {
    let client = webhook_client();
    while let Some(event) = rx.recv().await {
        post(&client, &urls, &event).await;
    }
}

/// The client webhooks are posted with.
pub fn webhook_client() -> reqwest::Client {
    crate::tls::http_client()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Posts `event` to every one of `urls`, each tried [`ATTEMPTS`] times
/// with backoff; a webhook that still fails is logged and skipped.
pub async fn post(client: &reqwest::Client, urls: &[String], event: &Event) {
    for url in urls {
        let mut backoff = Duration::from_millis(250);
        for attempt in 1..=ATTEMPTS {
            let sent = client.post(url).json(event).send().await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                outcome => {
                    let why = match outcome {
                        Ok(r) => format!("answered {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(%url, attempt, %why, "event webhook failed");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}

impl Controller {
    /// Records an event and hands it to the webhooks; one the store
    /// refuses is logged.
    pub(super) fn record_event(
        &self,
        service: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) {
        if let Err(error) = self.try_record_event(service, kind, message, detail) {
            tracing::error!(%error, service, kind, "cannot record event");
        }
    }

    /// Records an event and hands it to the webhooks; one the store
    /// refuses is the caller's error (a command that is its event).
    pub(super) fn try_record_event(
        &self,
        service: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> crate::Result<()> {
        let event = self.store.add_event(service, kind, message, detail)?;
        tracing::info!(service, kind, message, "event");
        // Webhooks are posted by the node that leads (a single serve; a
        // fleet's leader posts them from the store).
        if self.notifier.is_on() {
            self.notifier.part().send(event);
        }
        Ok(())
    }

    /// Records an event for every service that answers for `host` (what
    /// happens to the host's certificate, say); none when no service does.
    pub fn record_host_event(
        &self,
        host: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) {
        let services: Vec<String> = self
            .current_map()
            .iter()
            .filter(|(_, revision)| revision.state.hosts.contains(host))
            .map(|(name, _)| name.to_string())
            .collect();
        for service in services {
            self.record_event(&service, kind, message, detail.clone());
        }
    }

    /// A service's events, newest first.
    pub fn events(
        &self,
        service: &crate::model::ServiceName,
        limit: usize,
    ) -> crate::Result<Vec<Event>> {
        self.require(service)?;
        Ok(self.store.events(service.as_str(), limit)?)
    }
}
