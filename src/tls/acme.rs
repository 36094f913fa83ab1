//! Certificates ordered from an ACME CA (Let's Encrypt by default): the
//! account kept in the store (every serve of a fleet shares it), HTTP-01
//! answered by the proxy's cleartext listener or TLS-ALPN-01 by its TLS
//! listener (RFC 8737), the certificate stored
//! with source `acme` and served by SNI at once, and renewed when a third
//! of its lifetime is left. A failed order or renewal keeps the old
//! certificate; its error is shown by `tls ls`, logged and counted.
//! `tls rm` of a host whose order runs cancels the order: nothing is
//! stored for it afterwards. The host names of services marked for
//! automatic certificates are ordered as they appear.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod challenges;
mod fleet;

pub use challenges::AcmeChallenges;
pub use fleet::{AcmeFleet, OtherNodes};

use super::{CertificateSource, Certificates, ClientTrust, HostPattern, client_config, provider};
use crate::model::{AcmeChallenge, AutoCertificates, now_millis};
use crate::store::ServiceStore;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The path prefix of HTTP-01 challenges (RFC 8555 8.3).
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A failed order or renewal is tried again after this many checks.
const FAILED_RETRY_CHECKS: u32 = 10;

/// How long one order may take, from the first request to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// What to order: the names (the first is the host the certificate is
/// kept under), the contact, the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeRequest {
    pub hosts: Vec<String>,
    pub email: String,
    #[serde(default = "default_directory")]
    pub directory: String,
    /// PEM of the CA that signs the directory's HTTPS certificate, when it
    /// is a private one (a test CA such as pebble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca_pem: Option<String>,
    /// How the CA validates the names (HTTP-01 unless told).
    #[serde(default)]
    pub challenge: AcmeChallenge,
}

impl AcmeRequest {
    /// The order a service marked for automatic certificates makes for
    /// one of its host names.
    pub fn automatic(host: &str, auto: &AutoCertificates) -> AcmeRequest {
        AcmeRequest {
            hosts: vec![host.to_owned()],
            email: auto.email.clone(),
            directory: auto.directory.clone(),
            directory_ca_pem: auto.directory_ca_pem.clone(),
            challenge: auto.challenge,
        }
    }
}

fn default_directory() -> String {
    LETS_ENCRYPT.to_owned()
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcmeState {
    /// Being ordered (or renewed) now.
    Ordering,
    /// The certificate is stored and served.
    Valid,
    /// The last order failed (an older certificate, if any, is still served).
    Failed,
}

/// An order as the store keeps it and the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcmeOrder {
    pub request: AcmeRequest,
    pub state: AcmeState,
    /// What is being done now (while ordering).
    #[serde(default)]
    pub step: String,
    /// Why the last order or renewal failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the state last changed (ms since the Unix epoch).
    pub updated_at: u64,
}

impl AcmeOrder {
    pub fn host(&self) -> &str {
        self.request.hosts.first().map_or("", String::as_str)
    }
}

/// Why an order failed, as the operator reads it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(
        "bad ACME request: {0}; give host names such as app.example.com and an --email address"
    )]
    BadRequest(String),
    #[error(
        "cannot reach the ACME CA at {directory}: {reason}; check the address and that it is up"
    )]
    Unreachable { directory: String, reason: String },
    #[error("the ACME CA refused {what}: {detail}")]
    Refused { what: String, detail: String },
    #[error(
        "the CA could not validate {host} over {}: {detail}; the CA must reach this serve's {} as {host}", challenge.as_str().to_uppercase(), challenge.listener()
    )]
    ChallengeFailed {
        host: String,
        challenge: AcmeChallenge,
        detail: String,
    },
    #[error(
        "serve has no TLS listener to answer TLS-ALPN-01 on: start it with --tls-listen, or order with --challenge http-01"
    )]
    NoTlsListener,
    #[error(
        "TLS-ALPN-01 is answered only by the node that orders, and the CA may reach any node of the fleet: order with --challenge http-01"
    )]
    TlsAlpnInFleet,
    #[error("the order for {0} was cancelled: its certificate was removed (`switchyard tls rm`)")]
    Cancelled(String),
    #[error("the certificate the CA issued cannot be used: {0}")]
    BadCertificate(String),
    #[error("an order for {0} is already running; wait for it (`switchyard tls ls`)")]
    Busy(String),
    #[error("no ACME order for {0}; start one with `switchyard tls acme`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Orders and renews the ACME certificates of a serve.
pub struct Acme {
    store: Arc<dyn ServiceStore>,
    certificates: Arc<Certificates>,
    challenges: AcmeChallenges,
    orders: Mutex<HashMap<String, AcmeOrder>>,
    /// The orders running now, by host; `tls rm` takes one out and
    /// cancels it. A certificate is stored, and an outcome saved, only
    /// while the order's claim is still here (under this lock).
    running: Mutex<HashMap<String, Claim>>,
    next_claim: AtomicU64,
    failures: AtomicU64,
    events: OnceLock<EventSink>,
    /// Whether serve has a TLS listener (for TLS-ALPN-01).
    tls_listener: AtomicBool,
    /// The host names of services marked for automatic certificates.
    automatic: OnceLock<AutomaticHosts>,
    /// Wakes the renewal loop (a service's host names changed).
    wake: Notify,
    /// Where this serve stands in its fleet (a single serve: not set).
    fleet: OnceLock<AcmeFleet>,
}

/// A running order's hold on its host.
#[derive(Debug, Clone)]
struct Claim {
    id: u64,
    cancel: CancellationToken,
}

/// The host names that should have ACME certificates, and where from.
pub type AutomaticHosts = Box<dyn Fn() -> Vec<(String, AutoCertificates)> + Send + Sync>;

/// Where an order's outcome is recorded as an event: `(host, kind,
/// message, detail)`.
pub type EventSink = Box<dyn Fn(&str, &str, &str, serde_json::Value) + Send + Sync>;

impl Acme {
    /// Loads the kept orders; an order interrupted by a stop is taken
    /// up again by the next renewal check.
    pub fn load(
        store: Arc<dyn ServiceStore>,
        certificates: Arc<Certificates>,
        challenges: AcmeChallenges,
    ) -> Result<Arc<Acme>, AcmeError> {
        let mut orders = HashMap::new();
        for (host, json) in store.acme_orders()? {
            match serde_json::from_str::<AcmeOrder>(&json) {
                Ok(order) => {
                    orders.insert(host, order);
                }
                Err(error) => tracing::error!(host, %error, "a stored ACME order cannot be read"),
            }
        }
        Ok(Arc::new(Acme {
            store,
            certificates,
            challenges,
            orders: Mutex::new(orders),
            running: Mutex::default(),
            next_claim: AtomicU64::new(1),
            failures: AtomicU64::new(0),
            events: OnceLock::new(),
            tls_listener: AtomicBool::new(false),
            automatic: OnceLock::new(),
            wake: Notify::new(),
            fleet: OnceLock::new(),
        }))
    }

    /// Whether serve has a TLS listener to answer TLS-ALPN-01 on.
    pub fn set_tls_listener(&self, present: bool) {
        self.tls_listener.store(present, Ordering::Relaxed);
    }

    /// Where the host names of services marked for automatic certificates
    /// are read (set once, by serve).
    pub fn set_automatic(&self, hosts: AutomaticHosts) {
        let _ = self.automatic.set(hosts);
    }

    /// Looks for host names that need a certificate now, not at the next
    /// check (a service's settings changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends each order's outcome to `sink` too (set once, by serve).
    pub fn set_events(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    fn event(&self, host: &str, kind: &str, message: &str, detail: serde_json::Value) {
        if let Some(sink) = self.events.get() {
            sink(host, kind, message, detail);
        }
    }

    fn orders(&self) -> MutexGuard<'_, HashMap<String, AcmeOrder>> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every order, by host.
    pub fn list(&self) -> Vec<AcmeOrder> {
        let mut orders: Vec<_> = self.orders().values().cloned().collect();
        orders.sort_by(|a, b| a.host().cmp(b.host()));
        orders
    }

    pub fn order_of(&self, host: &str) -> Option<AcmeOrder> {
        self.orders().get(host).cloned()
    }

    /// Orders and renewals that failed since serve started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Checks a request (and puts its names and address in their usual
    /// form): what an order or a service's automatic certificates need.
    pub fn check(&self, request: &mut AcmeRequest) -> Result<(), AcmeError> {
        if request.hosts.is_empty() {
            return Err(AcmeError::BadRequest("no host name".into()));
        }
        for host in &mut request.hosts {
            match host.parse::<HostPattern>() {
                Ok(HostPattern::Exact(name)) => *host = name,
                _ => {
                    return Err(AcmeError::BadRequest(format!(
                        "`{host}` is not a host name HTTP-01 or TLS-ALPN-01 can validate (no wildcards)"
                    )));
                }
            }
        }
        if request.challenge == AcmeChallenge::TlsAlpn01 {
            if !self.tls_listener.load(Ordering::Relaxed) {
                return Err(AcmeError::NoTlsListener);
            }
            if self.in_fleet() {
                return Err(AcmeError::TlsAlpnInFleet);
            }
        }
        let email = request.email.trim();
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(AcmeError::BadRequest(format!(
                "`{email}` is not an email address"
            )));
        }
        request.email = email.to_owned();
        if url::Url::parse(&request.directory)
            .map_or(true, |u| !matches!(u.scheme(), "https" | "http"))
        {
            return Err(AcmeError::BadRequest(format!(
                "`{}` is not an https:// directory URL",
                request.directory
            )));
        }
        if let Some(pem) = &request.directory_ca_pem {
            ClientTrust {
                ca_files: Vec::new(),
                ca_pem: Some(pem.clone()),
            }
            .roots()
            .map_err(|e| AcmeError::BadRequest(e.to_string()))?;
        }
        Ok(())
    }

    /// Checks a request and starts its order in the background (on a
    /// node of a fleet that does not lead: keeps it for the leader).
    pub fn start(self: &Arc<Self>, mut request: AcmeRequest) -> Result<AcmeOrder, AcmeError> {
        self.check(&mut request)?;
        let host = request.hosts[0].clone();
        let order = AcmeOrder {
            request,
            state: AcmeState::Ordering,
            step: "starting".into(),
            last_error: self.order_of(&host).and_then(|o| o.last_error),
            updated_at: now_millis(),
        };
        if !self.leads() {
            return self.leave_to_leader(order);
        }
        // Claimed and saved under one lock, so that a `tls rm` comes
        // wholly before (and this order is new) or after (and cancels it).
        let Some(claim) = self.claim_and_save(&order, false)? else {
            return Err(AcmeError::Busy(host));
        };
        self.spawn_run(order.request.clone(), claim);
        Ok(order)
    }

    /// Runs a claimed order in the background, its writes under the
    /// leader's fence.
    fn spawn_run(self: &Arc<Self>, request: AcmeRequest, claim: Claim) {
        let acme = Arc::clone(self);
        tokio::spawn(crate::store::fence::scope(self.fence(), async move {
            acme.run(request, claim).await
        }));
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Claim>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_claim(&self) -> Claim {
        Claim {
            id: self.next_claim.fetch_add(1, Ordering::Relaxed),
            cancel: CancellationToken::new(),
        }
    }

    /// Claims the order's host and saves the order, under the lock `tls rm`
    /// takes, so that a removal comes wholly before or after. `None` when
    /// another order holds the host, or, for a renewal (`known`), when the
    /// order was forgotten meanwhile (its certificate was removed).
    fn claim_and_save(&self, order: &AcmeOrder, known: bool) -> Result<Option<Claim>, AcmeError> {
        let host = order.host();
        let mut running = self.running();
        if running.contains_key(host) || (known && !self.orders().contains_key(host)) {
            return Ok(None);
        }
        // Only the leader claims orders: its write goes under its fence.
        crate::store::fence::sync_scope(self.fence(), || self.save(order))?;
        let claim = self.new_claim();
        running.insert(host.to_owned(), claim.clone());
        Ok(Some(claim))
    }

    /// Forgets the order of `host` (its certificate was removed), so that
    /// it is not renewed; one running now is cancelled and stores
    /// nothing. Whether there was an order.
    pub fn forget(&self, host: &str) -> Result<bool, AcmeError> {
        let mut running = self.running();
        let cancelled = running.remove(host);
        if let Some(claim) = &cancelled {
            claim.cancel.cancel();
            tracing::info!(host, "ACME order cancelled: its certificate was removed");
        }
        self.store.delete_acme_order(host)?;
        let known = self.orders().remove(host).is_some();
        drop(running);
        Ok(known || cancelled.is_some())
    }

    fn save(&self, order: &AcmeOrder) -> Result<(), AcmeError> {
        let json = serde_json::to_string(order).map_err(crate::store::StoreError::from)?;
        self.store.save_acme_order(order.host(), &json)?;
        self.orders().insert(order.host().to_owned(), order.clone());
        Ok(())
    }

    fn step(&self, host: &str, step: &str) {
        let mut orders = self.orders();
        if let Some(order) = orders.get_mut(host) {
            order.step = step.to_owned();
            order.updated_at = now_millis();
        }
        drop(orders);
        tracing::info!(host, step, "ACME order");
    }

    /// Runs one claimed order to its end and records the outcome.
    async fn run(self: Arc<Self>, request: AcmeRequest, claim: Claim) {
        let host = request.hosts[0].clone();
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(ORDER_TIMEOUT, self.order(&request, &claim)) => {
                outcome.unwrap_or_else(|_| {
                    Err(AcmeError::Refused {
                        what: "the order".into(),
                        detail: format!("it took longer than {}s", ORDER_TIMEOUT.as_secs()),
                    })
                })
            }
            () = claim.cancel.cancelled() => Err(AcmeError::Cancelled(host.clone())),
        };
        // The outcome counts only while the order still holds its claim
        // (`tls rm` takes it out): kept under the lock to the end.
        let running = self.running();
        if running.get(&host).is_none_or(|c| c.id != claim.id) {
            tracing::info!(host, "the cancelled ACME order ended; nothing kept of it");
            return;
        }
        let mut order = self.order_of(&host).unwrap_or(AcmeOrder {
            request: request.clone(),
            state: AcmeState::Ordering,
            step: String::new(),
            last_error: None,
            updated_at: 0,
        });
        order.updated_at = now_millis();
        match outcome {
            Ok(()) => {
                self.event(
                    &host,
                    "certificate-issued",
                    &format!("ACME certificate for {host} stored and served"),
                    serde_json::json!({ "host": host, "directory": request.directory }),
                );
                order.state = AcmeState::Valid;
                order.step = "certificate stored".into();
                order.last_error = None;
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let kept = self.certificates.list().iter().any(|c| c.host == host);
                tracing::warn!(
                    host,
                    %error,
                    old_certificate_kept = kept,
                    "ACME order failed"
                );
                self.event(
                    &host,
                    "certificate-failed",
                    &format!("ACME order for {host} failed: {error}"),
                    serde_json::json!({
                        "host": host,
                        "directory": request.directory,
                        "error": error.to_string(),
                        "old_certificate_kept": kept,
                    }),
                );
                order.state = AcmeState::Failed;
                order.step = "failed".into();
                order.last_error = Some(error.to_string());
            }
        }
        if let Err(error) = self.save(&order) {
            tracing::error!(host, %error, "cannot record the ACME order's outcome");
        }
        let mut running = running;
        running.remove(&host);
    }

    /// The account for a directory: the stored one, else a new one
    /// (stored, so that the fleet and later orders use it).
    async fn account(&self, request: &AcmeRequest) -> Result<Account, AcmeError> {
        let unreachable = |e: instant_acme::Error| match e {
            instant_acme::Error::Api(problem) => AcmeError::Refused {
                what: "the account".into(),
                detail: problem.to_string(),
            },
            other => AcmeError::Unreachable {
                directory: request.directory.clone(),
                reason: error_chain(&other),
            },
        };
        let http = || -> Result<Box<dyn HttpClient>, AcmeError> {
            Ok(Box::new(ReqwestHttp::new(
                request.directory_ca_pem.clone(),
            )?))
        };
        if let Some(json) = self.store.acme_account(&request.directory)? {
            if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&json) {
                return Account::builder_with_http(http()?)
                    .from_credentials(credentials)
                    .await
                    .map_err(unreachable);
            }
            tracing::warn!(
                directory = request.directory,
                "the stored ACME account cannot be read; making a new one"
            );
        }
        let contact = format!("mailto:{}", request.email);
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                request.directory.clone(),
                None,
            )
            .await
            .map_err(unreachable)?;
        let json = serde_json::to_string(&credentials).map_err(crate::store::StoreError::from)?;
        self.store.save_acme_account(&request.directory, &json)?;
        Ok(account)
    }

    async fn order(&self, request: &AcmeRequest, claim: &Claim) -> Result<(), AcmeError> {
        let host = request.hosts[0].as_str();
        let refused = |what: &str| {
            let what = what.to_owned();
            let directory = request.directory.clone();
            move |e: instant_acme::Error| match e {
                instant_acme::Error::Api(problem) => AcmeError::Refused {
                    what,
                    detail: problem.to_string(),
                },
                other => AcmeError::Unreachable {
                    directory,
                    reason: error_chain(&other),
                },
            }
        };
        self.step(host, "reaching the CA");
        let account = self.account(request).await?;
        let identifiers: Vec<Identifier> = request
            .hosts
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        self.step(host, "placing the order");
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(refused("the order"))?;
        // Answered while the order runs, and no longer once it ends, also
        // when it is cancelled or runs out of time (dropped).
        let mut answering = Answering {
            challenges: &self.challenges,
            store: self.store.as_ref(),
            resolver: self.certificates.resolver(),
            tokens: Vec::new(),
            names: Vec::new(),
        };
        let kind = request.challenge;
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(refused("the authorization"))?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(AcmeError::Refused {
                            what: "the authorization".into(),
                            detail: format!("it is {other:?}"),
                        });
                    }
                }
                let name = match &authorization.identifier().identifier {
                    Identifier::Dns(name) => name.clone(),
                    other => format!("{other:?}"),
                };
                let wanted = match kind {
                    AcmeChallenge::Http01 => ChallengeType::Http01,
                    AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                };
                let mut challenge =
                    authorization
                        .challenge(wanted)
                        .ok_or_else(|| AcmeError::Refused {
                            what: format!("{} for {name}", kind.as_str().to_uppercase()),
                            detail: format!("the CA offers no {kind} challenge"),
                        })?;
                let answer = challenge.key_authorization();
                match kind {
                    AcmeChallenge::Http01 => {
                        let token = challenge.token.clone();
                        self.challenges.add(&token, answer.as_str());
                        answering.tokens.push(token.clone());
                        // Kept in a fleet's store for every node to answer.
                        self.store.save_acme_challenge(&token, answer.as_str())?;
                        self.preflight(&name, &token, answer.as_str()).await;
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        let key = challenge_certificate(&name, answer.digest().as_ref())?;
                        answering.resolver.start_challenge(&name, key);
                        answering.names.push(name.clone());
                    }
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(refused("the challenge"))?;
            }
            self.step(host, "waiting for the CA to validate");
            let retries = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(Duration::from_secs(60));
            let status = order.poll_ready(&retries).await.map_err(|e| match e {
                instant_acme::Error::Api(problem) => AcmeError::ChallengeFailed {
                    host: host.to_owned(),
                    challenge: kind,
                    detail: problem.to_string(),
                },
                other => refused("the order")(other),
            })?;
            if status != OrderStatus::Ready {
                let detail = challenge_errors(&mut order).await;
                return Err(AcmeError::ChallengeFailed {
                    host: host.to_owned(),
                    challenge: kind,
                    detail,
                });
            }
            Ok(())
        }
        .await;
        drop(answering);
        result?;
        self.step(host, "finalizing");
        let key = rcgen::KeyPair::generate()
            .map_err(|e| AcmeError::BadCertificate(format!("cannot make a key: {e}")))?;
        let csr = rcgen::CertificateParams::new(request.hosts.clone())
            .and_then(|params| params.serialize_request(&key))
            .map_err(|e| AcmeError::BadCertificate(format!("cannot make the request: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(refused("the certificate request"))?;
        self.step(host, "downloading the certificate");
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(60)))
            .await
            .map_err(refused("the certificate"))?;
        let pattern: HostPattern = host
            .parse()
            .map_err(|e: super::TlsError| AcmeError::BadRequest(e.to_string()))?;
        // Stored only while the order holds its claim: a `tls rm` that
        // came first cancelled it, one that comes after removes this.
        let running = self.running();
        if running.get(host).is_none_or(|c| c.id != claim.id) {
            return Err(AcmeError::Cancelled(host.to_owned()));
        }
        self.certificates
            .add(
                pattern,
                &chain,
                &key.serialize_pem(),
                CertificateSource::Acme,
            )
            .map_err(|e| AcmeError::BadCertificate(e.to_string()))?;
        drop(running);
        Ok(())
    }

    /// Starts a renewal for every ACME certificate with a third of its
    /// lifetime left or less (and every order with no certificate yet
    /// that is not running).
    /// A failed one is tried again no sooner than `retry_after` after it
    /// failed, so that a CA's rate limits are not spent on a cause that
    /// has not changed.
    pub fn renew_due(self: &Arc<Self>, retry_after: Duration) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let certificates = self.certificates.list();
        for order in self.list() {
            let host = order.host().to_owned();
            let due = match certificates.iter().find(|c| c.host == host) {
                Some(c) => {
                    let lifetime = (c.not_after - c.not_before).max(0);
                    c.not_after - now <= lifetime / 3
                }
                None => true,
            };
            let retry_at = order.updated_at + u64::try_from(retry_after.as_millis()).unwrap_or(0);
            if order.state == AcmeState::Failed && now_millis() < retry_at {
                continue;
            }
            if !due {
                continue;
            }
            let mut order = order;
            order.state = AcmeState::Ordering;
            order.step = "renewing".into();
            order.updated_at = now_millis();
            let claim = match self.claim_and_save(&order, true) {
                Ok(Some(claim)) => claim,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(host, %error, "cannot record the renewal; it is tried again later");
                    continue;
                }
            };
            tracing::info!(host, "renewing the ACME certificate");
            self.spawn_run(order.request, claim);
        }
    }

    /// Starts an order for every host name of a service marked for
    /// automatic certificates that has neither a certificate nor an order.
    pub fn order_automatic(self: &Arc<Self>) {
        let Some(automatic) = self.automatic.get() else {
            return;
        };
        let wanted = automatic();
        if wanted.is_empty() {
            return;
        }
        let certificates = self.certificates.list();
        let orders = self.list();
        for (host, auto) in wanted {
            let has_certificate = certificates.iter().any(|c| c.host == host);
            let has_order = orders.iter().any(|o| o.request.hosts.contains(&host));
            if has_certificate || has_order || !matches!(host.parse(), Ok(HostPattern::Exact(_))) {
                continue;
            }
            match self.start(AcmeRequest::automatic(&host, &auto)) {
                Ok(_) => tracing::info!(host, "ordering a certificate for a new host name"),
                Err(AcmeError::Busy(_)) => {}
                Err(error) => {
                    tracing::warn!(host, %error, "cannot order a certificate for the host name")
                }
            }
        }
    }

    /// Checks for renewals every `every`, from now on, until serve stops
    /// (a failed one is tried again ten checks later). On a node of a
    /// fleet, only while it leads.
    pub fn start_renewals(self: &Arc<Self>, every: Duration) {
        let mut lead_changes = self.lead_changes();
        let acme = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let ticked = {
                    let Some(acme) = acme.upgrade() else { return };
                    let wake = async { acme.wake.notified().await };
                    tokio::select! {
                        _ = ticks.tick() => true,
                        () = wake => false,
                        () = lead_changed(&mut lead_changes) => false,
                    }
                };
                let Some(acme) = acme.upgrade() else { return };
                if !acme.leads() {
                    acme.stand_down();
                    continue;
                }
                if ticked {
                    acme.renew_due(every * FAILED_RETRY_CHECKS);
                }
                acme.take_up();
                acme.order_automatic();
            }
        });
    }
}

/// Ends when the leadership changes (never, for a single serve).
async fn lead_changed(
    changes: &mut Option<tokio::sync::watch::Receiver<crate::controller::LeaderState>>,
) {
    match changes {
        Some(receiver) => {
            if receiver.changed().await.is_err() {
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The challenges an order answers; they are answered no more once it
/// is dropped.
struct Answering<'a> {
    challenges: &'a AcmeChallenges,
    store: &'a dyn ServiceStore,
    resolver: Arc<super::CertificateResolver>,
    /// HTTP-01 tokens.
    tokens: Vec<String>,
    /// Names validated over TLS-ALPN-01.
    names: Vec<String>,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.challenges.remove(token);
            if let Err(error) = self.store.delete_acme_challenge(token) {
                tracing::warn!(token, %error, "cannot remove the answered ACME challenge from the store");
            }
        }
        for name in &self.names {
            self.resolver.end_challenge(name);
        }
    }
}

/// The certificate a TLS-ALPN-01 validation of `name` is answered with
/// (RFC 8737 3): self-signed, for the name only, carrying the digest of
/// the key authorization in the critical acmeIdentifier extension.
fn challenge_certificate(
    name: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, AcmeError> {
    let bad = |e: &dyn std::fmt::Display| {
        AcmeError::BadCertificate(format!("cannot make the TLS-ALPN-01 certificate: {e}"))
    };
    let key = rcgen::KeyPair::generate().map_err(|e| bad(&e))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| bad(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| bad(&e))?;
    let private =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| bad(&e))?;
    // Not `CertifiedKey::from_der`: its check of the certificate refuses
    // the critical acmeIdentifier extension the CA requires.
    let signer = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| bad(&e))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The errors of an order's failed challenges, as the CA gave them.
async fn challenge_errors(order: &mut instant_acme::Order) -> String {
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                details.push(problem.to_string());
            }
        }
    }
    if details.is_empty() {
        "the order became invalid".into()
    } else {
        details.join("; ")
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The ACME client's HTTP, over reqwest with serve's own TLS settings
/// (ring, the system's roots plus a private CA when given).
struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    fn new(ca_pem: Option<String>) -> Result<ReqwestHttp, AcmeError> {
        let trust = ClientTrust {
            ca_files: Vec::new(),
            ca_pem,
        };
        let config = client_config(&trust, &[b"http/1.1"])
            .map_err(|e| AcmeError::BadRequest(e.to_string()))?;
        let client = super::http_client()
            .tls_backend_preconfigured(config)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AcmeError::BadRequest(e.to_string()))?;
        Ok(ReqwestHttp { client })
    }
}

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut out = http::Response::new(Full::new(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok(BytesResponse::from(out))
        })
    }
}
