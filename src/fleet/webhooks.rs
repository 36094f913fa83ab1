//! A fleet's event webhooks: every node records its events in etcd, and
//! the node that leads posts them all, in the order they were recorded.
//! It notes the last event posted (`webhooks/posted`, a write fenced by
//! its election key) after each post, so that the next leader goes on
//! after it. Delivery is at least once: an event posted by a leader that
//! died (`kill -9`) before it noted it is posted again by the next leader,
//! and a leader paused past its lease may post the event it was at once
//! more before its note is refused; no event is posted twice otherwise.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::store::{EtcdStore, ServiceStore, fence};

/// Events read from the store at a time.
const BATCH: usize = 100;
/// How long to wait before reading the store again after it failed.
const RETRY: Duration = Duration::from_millis(500);

/// On the control plane: whenever `wake` is told (a new event in the
/// fleet, this node took the lead, the watch started again), posts to
/// `urls` the events after the last one posted, while this node leads.
pub(super) async fn post_events(
    controller: Weak<Controller>,
    store: Weak<EtcdStore>,
    urls: Vec<String>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    if urls.is_empty() {
        return;
    }
    let client = crate::controller::webhook_client();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
        }
        let (Some(controller), Some(store)) = (controller.upgrade(), store.upgrade()) else {
            return;
        };
        if let Err(error) = post_pending(&controller, &store, &client, &urls).await {
            tracing::warn!(%error, "cannot post the fleet's events to the webhooks; trying again");
            wake.notify_one();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

/// Posts the events not posted yet, while this node leads.
async fn post_pending(
    controller: &Arc<Controller>,
    store: &Arc<EtcdStore>,
    client: &reqwest::Client,
    urls: &[String],
) -> crate::store::StoreResult<()> {
    loop {
        if !controller.leadership().is_leading() {
            return Ok(());
        }
        let fence = controller.leadership().fence();
        let posted = store.webhooks_posted()?;
        let events = store.events_after(posted, BATCH)?;
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            if controller.leadership().fence() != fence {
                return Ok(());
            }
            crate::controller::post_event(client, urls, &event).await;
            fence::sync_scope(fence.clone(), || store.set_webhooks_posted(event.id))?;
        }
    }
}
