//! The open connections of one budget (the proxy with its pinned
//! addresses, or the admin API): counted against a total cap and a cap per
//! client address. A connection over a cap makes room by shedding an idle
//! one (closed gracefully); when none is idle it is refused.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use slab::Slab;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::limits::Limits;
use super::watch::{Shed, Watch};
use crate::metrics::ConnectionSample;

/// How many connections one admission looks at for an idle one to shed,
/// from where the last look stopped: all of them under caps up to this,
/// bounded work per accept above.
const SHED_SCAN: usize = 4096;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total cap, with no idle connection to shed.
    Total,
    /// Its address's cap, with no idle connection of that address to shed.
    PerClient,
}

/// The open connections of one budget, its limits and its counters.
pub struct Connections {
    name: &'static str,
    limits: Limits,
    registry: Mutex<Registry>,
    /// Requests in flight, when capped.
    requests: Option<Arc<Semaphore>>,
    counts: Counts,
}

#[derive(Default)]
struct Registry {
    open: Slab<Entry>,
    by_client: HashMap<IpAddr, Vec<usize>>,
    /// Where the next look for an idle connection starts.
    cursor: usize,
}

struct Entry {
    watch: Arc<Watch>,
    client: IpAddr,
    listener: u64,
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused_total: AtomicU64,
    refused_per_client: AtomicU64,
    shed: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    accept_errors: AtomicU64,
    tls_handshake_timeouts: AtomicU64,
    tls_handshake_failures: AtomicU64,
}

/// What one connection holds of its budget; given back when dropped (when
/// its socket closes, after an upgrade too).
pub struct Slot {
    connections: Arc<Connections>,
    key: usize,
}

impl Connections {
    pub fn new(name: &'static str, limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            name,
            requests: limits.requests.map(|n| Arc::new(Semaphore::new(n))),
            limits,
            registry: Mutex::default(),
            counts: Counts::default(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(super) fn requests(&self) -> Option<&Arc<Semaphore>> {
        self.requests.as_ref()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for a new connection from `client` on `listener`,
    /// shedding an idle connection when a cap is reached.
    pub(super) fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        listener: u64,
    ) -> Result<(Slot, Arc<Watch>), Refusal> {
        let client = client_of(client);
        let mut registry = self.registry();
        let now = Instant::now();
        let of_client = registry.by_client.get(&client).map_or(0, Vec::len);
        if of_client >= self.limits.per_client {
            if !registry.shed_one_of(client, now) {
                self.counts
                    .refused_per_client
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::PerClient);
            }
            self.counts.shed.fetch_add(1, Ordering::Relaxed);
        } else if registry.open.len() >= self.limits.connections {
            if !registry.shed_any(now) {
                self.counts.refused_total.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Total);
            }
            self.counts.shed.fetch_add(1, Ordering::Relaxed);
        }
        let watch = Arc::new(Watch::new(now));
        let key = registry.open.insert(Entry {
            watch: Arc::clone(&watch),
            client,
            listener,
        });
        registry.by_client.entry(client).or_default().push(key);
        self.counts.accepted.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            connections: Arc::clone(self),
            key,
        };
        Ok((slot, watch))
    }

    /// Asks every connection of `listener` to close gracefully.
    pub(super) fn close_all(&self, listener: u64) {
        for (_, entry) in self.registry().open.iter() {
            if entry.listener == listener {
                entry.watch.ask_to_close();
            }
        }
    }

    pub(super) fn header_timed_out(&self) {
        self.counts.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn idle_timed_out(&self) {
        self.counts.idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn tls_handshake_timed_out(&self) {
        self.counts
            .tls_handshake_timeouts
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn tls_handshake_failed(&self) {
        self.counts
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn accept_failed(&self) {
        self.counts.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The numbers `/metrics` shows.
    pub fn sample(&self) -> ConnectionSample {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConnectionSample {
            listener: self.name,
            open: self.registry().open.len(),
            max: self.limits.connections,
            max_per_client: self.limits.per_client,
            accepted: count(&self.counts.accepted),
            refused_total: count(&self.counts.refused_total),
            refused_per_client: count(&self.counts.refused_per_client),
            shed: count(&self.counts.shed),
            header_timeouts: count(&self.counts.header_timeouts),
            idle_timeouts: count(&self.counts.idle_timeouts),
            accept_errors: count(&self.counts.accept_errors),
            tls_handshake_timeouts: count(&self.counts.tls_handshake_timeouts),
            tls_handshake_failures: count(&self.counts.tls_handshake_failures),
        }
    }
}

/// Who a connection counts against for the per-client cap: its IPv4
/// address, or the /64 prefix of its IPv6 address (one host usually has a
/// whole /64 to pick addresses from).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Sheds an idle connection of `client`, if it has one.
    fn shed_one_of(&mut self, client: IpAddr, now: Instant) -> bool {
        let Some(keys) = self.by_client.get(&client) else {
            return false;
        };
        let open = &self.open;
        let entries = keys.iter().filter_map(|key| Some((*key, open.get(*key)?)));
        match choose(entries, now) {
            Some((_, entry)) => {
                entry.watch.ask_to_close();
                true
            }
            None => false,
        }
    }

    /// Sheds an idle connection, looking from where the last look ended.
    fn shed_any(&mut self, now: Instant) -> bool {
        let cursor = self.cursor;
        let from_cursor = self.open.iter().filter(|(key, _)| *key >= cursor);
        let before_cursor = self.open.iter().filter(|(key, _)| *key < cursor);
        let looked = from_cursor.chain(before_cursor).take(SHED_SCAN);
        let mut last = None;
        let chosen = choose(looked.inspect(|(key, _)| last = Some(*key)), now);
        if let Some((key, entry)) = chosen {
            entry.watch.ask_to_close();
            self.cursor = key + 1;
            return true;
        }
        if let Some(key) = last {
            self.cursor = key + 1;
        }
        false
    }

    fn remove(&mut self, key: usize) {
        let Some(entry) = self.open.try_remove(key) else {
            return;
        };
        if let Some(keys) = self.by_client.get_mut(&entry.client) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_client.remove(&entry.client);
            }
        }
    }
}

/// The connection to shed among `entries`: the first one idle after a
/// response or silent for a while; otherwise the oldest one just accepted
/// and silent so far.
fn choose<'a>(
    entries: impl Iterator<Item = (usize, &'a Entry)>,
    now: Instant,
) -> Option<(usize, &'a Entry)> {
    let mut oldest_silent: Option<(usize, &Entry, Instant)> = None;
    for (key, entry) in entries {
        match entry.watch.shed(now) {
            Some(Shed::Gladly) => return Some((key, entry)),
            Some(Shed::Reluctantly { accepted })
                if oldest_silent.is_none_or(|(_, _, a)| accepted < a) =>
            {
                oldest_silent = Some((key, entry, accepted));
            }
            Some(Shed::Reluctantly { .. }) | None => {}
        }
    }
    oldest_silent.map(|(key, entry, _)| (key, entry))
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.registry().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::watch::Timeouts;
    use std::time::Duration;

    fn connections(total: usize, per_client: usize) -> Arc<Connections> {
        Connections::new(
            "test",
            Limits {
                connections: total,
                per_client,
                requests: None,
                timeouts: Timeouts {
                    header: Duration::from_secs(10),
                    idle: Duration::from_secs(60),
                },
                http2_max_streams: 100,
                http2_keep_alive: None,
                tls_handshake: Duration::from_secs(10),
            },
        )
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// A connection in the middle of a request head: never shed.
    fn busy(watch: &Watch) {
        watch.on_read(b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn over_the_total_an_idle_connection_is_shed_to_make_room() {
        let c = connections(2, 2);
        let (_a, a) = c.admit(ip(1), 0).expect("first");
        let (_b, b) = c.admit(ip(2), 0).expect("second");
        busy(&a);
        let (_c, _) = c.admit(ip(3), 0).expect("third, by shedding the idle one");
        assert!(
            b.is_asked_to_close(),
            "the idle connection is asked to close"
        );
        assert!(!a.is_asked_to_close(), "the busy one is left alone");
        assert_eq!(c.sample().shed, 1);
    }

    #[test]
    fn over_the_total_with_none_idle_the_new_connection_is_refused() {
        let c = connections(2, 2);
        let (_a, a) = c.admit(ip(1), 0).expect("first");
        let (_b, b) = c.admit(ip(2), 0).expect("second");
        busy(&a);
        busy(&b);
        assert_eq!(c.admit(ip(3), 0).err(), Some(Refusal::Total));
        let sample = c.sample();
        assert_eq!(
            (sample.refused_total, sample.open, sample.accepted),
            (1, 2, 2)
        );
    }

    #[test]
    fn one_address_over_its_cap_sheds_its_own_idle_or_is_refused() {
        let c = connections(10, 2);
        let (_a, a) = c.admit(ip(1), 0).expect("first");
        let (b_slot, b) = c.admit(ip(1), 0).expect("second");
        let (_o, other) = c.admit(ip(2), 0).expect("another address");
        busy(&a);
        let (_c, third) = c.admit(ip(1), 0).expect("sheds its own idle one");
        assert!(b.is_asked_to_close());
        assert!(
            !other.is_asked_to_close(),
            "another address's idle one is not shed"
        );
        drop(b_slot);
        busy(&third);
        assert_eq!(c.admit(ip(1), 0).err(), Some(Refusal::PerClient));
        assert_eq!(c.sample().refused_per_client, 1);
        assert!(c.admit(ip(3), 0).is_ok(), "other addresses still get in");
    }

    #[test]
    fn a_lone_idle_connection_among_busy_ones_is_found_wherever_it_is() {
        let c = connections(300, 300);
        let mut open = Vec::new();
        for _ in 0..300 {
            let (slot, watch) = c.admit(ip(1), 0).expect("under the cap");
            busy(&watch);
            open.push((slot, watch));
        }
        assert_eq!(c.admit(ip(2), 0).err(), Some(Refusal::Total));
        // An early connection ends its request and idles, behind where
        // the last look stopped.
        let early = &open[7].1;
        early.request_started(false);
        early.request_ended();
        assert!(c.admit(ip(2), 0).is_ok(), "room made by shedding it");
        assert!(early.is_asked_to_close());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let c = connections(10, 1);
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_prefix: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_prefix: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let (_a, a) = c.admit(one, 0).expect("first");
        busy(&a);
        assert_eq!(c.admit(same_prefix, 0).err(), Some(Refusal::PerClient));
        assert!(c.admit(other_prefix, 0).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().expect("ip");
        let (_m, m) = c.admit(mapped, 0).expect("mapped");
        busy(&m);
        assert_eq!(
            c.admit(ip(9), 0).err(),
            Some(Refusal::PerClient),
            "an IPv4-mapped address is its IPv4 address"
        );
    }

    #[test]
    fn a_connection_just_accepted_is_shed_last() {
        let c = connections(3, 3);
        let (_a, a) = c.admit(ip(1), 0).expect("first");
        let (_b, b) = c.admit(ip(2), 0).expect("second");
        let (_c, newest) = c.admit(ip(3), 0).expect("third");
        busy(&a);
        let (_d, _) = c.admit(ip(4), 0).expect("fourth, by shedding one");
        assert!(b.is_asked_to_close(), "the older of the silent ones goes");
        assert!(!newest.is_asked_to_close());
    }

    #[test]
    fn a_closed_connection_gives_its_slot_back() {
        let c = connections(1, 1);
        let (slot, watch) = c.admit(ip(1), 0).expect("first");
        busy(&watch);
        assert!(c.admit(ip(1), 0).is_err());
        drop(slot);
        assert_eq!(c.sample().open, 0);
        assert!(c.admit(ip(1), 0).is_ok());
    }

    #[test]
    fn closing_a_listener_asks_only_its_own_connections() {
        let c = connections(10, 10);
        let (_a, a) = c.admit(ip(1), 1).expect("on listener 1");
        let (_b, b) = c.admit(ip(1), 2).expect("on listener 2");
        c.close_all(1);
        assert!(a.is_asked_to_close());
        assert!(!b.is_asked_to_close());
    }
}
