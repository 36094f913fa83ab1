//! `switchyard store copy`: a state directory's shared state copied into
//! another store (a fleet's etcd), so that a one-node installation becomes
//! the first node of a fleet. Every revision of every service is copied in
//! order (the same numbers, actions, actors and times), with its releases,
//! rollouts, upgrades, pauses, certificates and ACME orders. Events are
//! copied in order with their text and detail; they carry the time of the
//! copy, and are noted as posted to the webhooks (the serve they come from
//! posted them). ACME accounts are not copied: the fleet registers its own.

use super::{ServiceStore, StoreResult};

/// As many as there are.
const ALL: usize = i64::MAX as usize;

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub services: usize,
    pub revisions: usize,
    pub releases: usize,
    pub events: usize,
    /// The id of the last event copied, in the store copied into.
    pub last_event: Option<u64>,
}

/// Copies everything `from` holds into `to`, which must hold no service
/// yet (`Err(Some(names))` names the services it has).
pub fn copy(
    from: &dyn ServiceStore,
    to: &dyn ServiceStore,
) -> StoreResult<Result<CopyReport, Vec<String>>> {
    let there = to.current_revisions()?;
    if !there.is_empty() {
        return Ok(Err(there.iter().map(|r| r.service.to_string()).collect()));
    }
    let mut report = CopyReport::default();
    for current in from.current_revisions()? {
        let service = &current.service;
        report.services += 1;
        for release in from.releases(service)? {
            to.register_release(&release)?;
            report.releases += 1;
        }
        let mut history = from.history(service, ALL)?;
        history.reverse();
        for revision in history {
            to.commit(&super::Commit {
                releases: Vec::new(),
                revision,
            })?;
            report.revisions += 1;
        }
        let mut events = from.events(service.as_str(), ALL)?;
        events.reverse();
        for event in events {
            let copied = to.add_event(&event.service, &event.kind, &event.message, event.detail)?;
            report.last_event = report.last_event.max(Some(copied.id));
            report.events += 1;
        }
    }
    for rollout in from.rollouts()? {
        to.save_rollout(&rollout)?;
    }
    for upgrade in from.upgrades()? {
        to.save_upgrade(&upgrade)?;
    }
    for pause in from.pauses()? {
        to.save_pause(&pause)?;
    }
    for certificate in from.certificates()? {
        to.save_certificate(&certificate)?;
    }
    for (host, order) in from.acme_orders()? {
        to.save_acme_order(&host, &order)?;
    }
    if let Some(id) = report.last_event {
        to.set_webhooks_posted(id)?;
    }
    Ok(Ok(report))
}
