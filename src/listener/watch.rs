//! What one client connection is doing, as its timers see it.
//!
//! The connection's reads and requests write a few atomics (no timer is
//! touched per request); the connection's task reads them only when its
//! single timer fires, and either closes the connection or sleeps until
//! the next deadline the state allows.

use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The bytes an HTTP/2 client opens with (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `Watch::preface` once the first bytes are known not to be the preface.
const NOT_PREFACE: u8 = u8::MAX;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepted, not a byte received yet.
    Fresh,
    /// Part of a request head received (the first one: since the accept).
    Head,
    /// A response was sent whole; waiting for the next request.
    Idle,
    /// Taken over by an upgrade (a WebSocket tunnel): no timer of ours.
    Upgraded,
}

impl Phase {
    fn from_u8(raw: u8) -> Phase {
        match raw {
            0 => Phase::Fresh,
            1 => Phase::Head,
            2 => Phase::Idle,
            _ => Phase::Upgraded,
        }
    }
}

/// The two timeouts a connection lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the accept (first request) or the first byte (later ones) to
    /// the end of the request head.
    pub header: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
}

/// How long a new connection may stay silent before it is as fair a
/// choice to shed as an idle keep-alive one.
const SILENT_GRACE: Duration = Duration::from_secs(1);

/// Whether a connection may be shed to make room for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Idle after a response, or silent since its accept for a while.
    Gladly,
    /// Just accepted and silent so far: its request may be on its way.
    /// Shed only when nothing better is open, the oldest first.
    Reluctantly { accepted: Instant },
}

/// What the timer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing is due; look again then.
    Until(Instant),
    /// The request head did not arrive in time: 408 and close.
    HeadTimedOut,
    /// No request for the idle timeout: close.
    IdleTimedOut,
}

/// A connection's state; shared by its socket, its service and its task.
#[derive(Debug)]
pub struct Watch {
    start: Instant,
    /// Requests read whose response has not been sent whole.
    active: AtomicU32,
    phase: AtomicU8,
    /// When the phase began, in nanoseconds since `start`.
    since: AtomicU64,
    /// It has had a request (so waiting is idling, not a late first head).
    served: AtomicBool,
    http2: AtomicBool,
    /// Bytes of the HTTP/2 preface its first bytes matched so far.
    preface: AtomicU8,
    /// Its head timer ran out: the next read answers 408 and fails.
    expired: AtomicBool,
    /// Asked to close gracefully (shed to make room, or drained).
    close: AtomicBool,
    waker: AtomicWaker,
    /// The request slot an upgraded connection keeps (it still holds an
    /// upstream connection).
    kept: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Watch {
    pub fn new(start: Instant) -> Watch {
        Watch {
            start,
            active: AtomicU32::new(0),
            phase: AtomicU8::new(Phase::Fresh as u8),
            since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            preface: AtomicU8::new(0),
            expired: AtomicBool::new(false),
            close: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            kept: Mutex::new(None),
        }
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: Phase, now: Instant) {
        self.since.store(
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn since(&self) -> Instant {
        self.start + Duration::from_nanos(self.since.load(Ordering::Relaxed))
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self, bytes: &[u8]) {
        match self.phase() {
            Phase::Fresh => {
                // The first head's clock started at the accept.
                self.phase.store(Phase::Head as u8, Ordering::Release);
                self.match_preface(bytes);
            }
            Phase::Head if !self.served.load(Ordering::Relaxed) => self.match_preface(bytes),
            // HTTP/2 sends frames of its own while idle (PING, SETTINGS).
            Phase::Idle if self.active.load(Ordering::Acquire) == 0 && !self.is_http2() => {
                self.set_phase(Phase::Head, Instant::now());
            }
            _ => {}
        }
    }

    fn match_preface(&self, bytes: &[u8]) {
        let matched = self.preface.load(Ordering::Relaxed);
        if matched == NOT_PREFACE || usize::from(matched) == PREFACE.len() {
            return;
        }
        let want = &PREFACE[usize::from(matched)..];
        let n = bytes.len().min(want.len());
        if bytes[..n] == want[..n] {
            let now = usize::from(matched) + n;
            self.preface
                .store(u8::try_from(now).unwrap_or(NOT_PREFACE), Ordering::Relaxed);
            if now == PREFACE.len() {
                self.http2.store(true, Ordering::Relaxed);
            }
        } else {
            self.preface.store(NOT_PREFACE, Ordering::Relaxed);
        }
    }

    /// A request head was read.
    pub fn request_started(&self, http2: bool) {
        self.active.fetch_add(1, Ordering::AcqRel);
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
        if http2 && !self.is_http2() {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    /// A response was sent whole (or abandoned).
    pub fn request_ended(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 && self.phase() != Phase::Upgraded {
            self.set_phase(Phase::Idle, Instant::now());
        }
    }

    /// The connection was upgraded; `permit` stays with it until it closes.
    pub fn upgraded(&self, permit: Option<OwnedSemaphorePermit>) {
        self.phase.store(Phase::Upgraded as u8, Ordering::Release);
        if permit.is_some() {
            *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = permit;
        }
    }

    /// Whether closing it now would lose nothing (no request in progress,
    /// not a byte of the next one, not asked to close already), and how
    /// good a choice it is at `now`.
    pub fn shed(&self, now: Instant) -> Option<Shed> {
        if self.is_busy() || self.is_asked_to_close() {
            return None;
        }
        match self.phase() {
            Phase::Idle => Some(Shed::Gladly),
            Phase::Fresh if now.saturating_duration_since(self.start) >= SILENT_GRACE => {
                Some(Shed::Gladly)
            }
            Phase::Fresh => Some(Shed::Reluctantly {
                accepted: self.start,
            }),
            Phase::Head | Phase::Upgraded => None,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// What is due at `now`.
    pub fn check(&self, now: Instant, timeouts: Timeouts) -> Check {
        due(
            self.phase(),
            self.since(),
            self.start,
            self.is_busy(),
            self.served.load(Ordering::Relaxed),
            now,
            timeouts,
        )
    }

    /// The head timer ran out: make the next read answer 408 and fail.
    pub fn expire(&self) {
        self.expired.store(true, Ordering::Release);
    }

    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Asks the connection's task to close it gracefully.
    pub fn ask_to_close(&self) {
        self.close.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_asked_to_close(&self) -> bool {
        self.close.load(Ordering::Acquire)
    }

    /// Completes once the connection was asked to close.
    pub async fn close_asked(&self) {
        poll_fn(|cx| {
            if self.is_asked_to_close() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.is_asked_to_close() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// The timer's decision, apart from the atomics it is read from.
fn due(
    phase: Phase,
    since: Instant,
    start: Instant,
    busy: bool,
    served: bool,
    now: Instant,
    timeouts: Timeouts,
) -> Check {
    // A request in progress is the request path's to time; look again
    // about when the connection could next be due.
    let recheck = now + timeouts.header.min(timeouts.idle);
    if busy {
        return Check::Until(recheck);
    }
    let (deadline, verdict) = match phase {
        Phase::Upgraded => return Check::Until(recheck),
        Phase::Fresh => (start + timeouts.header, Check::HeadTimedOut),
        Phase::Head if !served => (start + timeouts.header, Check::HeadTimedOut),
        Phase::Head => (since + timeouts.header, Check::HeadTimedOut),
        Phase::Idle => (since + timeouts.idle, Check::IdleTimedOut),
    };
    if now >= deadline {
        verdict
    } else {
        Check::Until(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_first_head_is_timed_from_the_accept() {
        let start = Instant::now();
        let w = Watch::new(start);
        assert_eq!(w.check(start + secs(9), T), Check::Until(start + secs(10)));
        w.on_read(b"GET / HT");
        assert_eq!(w.phase(), Phase::Head);
        assert_eq!(w.check(start + secs(9), T), Check::Until(start + secs(10)));
        assert_eq!(w.check(start + secs(10), T), Check::HeadTimedOut);
    }

    #[test]
    fn a_silent_new_connection_times_out_like_a_late_head_and_may_be_shed() {
        let start = Instant::now();
        let w = Watch::new(start);
        assert!(w.shed(Instant::now()).is_some());
        assert_eq!(w.check(start + secs(11), T), Check::HeadTimedOut);
        w.on_read(b"G");
        assert!(
            w.shed(Instant::now()).is_none(),
            "a head begun is never shed"
        );
    }

    #[test]
    fn a_connection_silent_for_a_moment_is_shed_only_reluctantly() {
        let start = Instant::now();
        let w = Watch::new(start);
        assert_eq!(
            w.shed(start + Duration::from_millis(10)),
            Some(Shed::Reluctantly { accepted: start })
        );
        assert_eq!(w.shed(start + secs(1)), Some(Shed::Gladly));
        w.ask_to_close();
        assert_eq!(w.shed(start + secs(1)), None, "once is enough");
    }

    #[test]
    fn a_busy_connection_has_no_deadline_of_ours() {
        let start = Instant::now();
        let w = Watch::new(start);
        w.on_read(b"GET / HTTP/1.1\r\n\r\n");
        w.request_started(false);
        assert!(w.shed(Instant::now()).is_none());
        assert_eq!(
            w.check(start + secs(100), T),
            Check::Until(start + secs(110))
        );
    }

    #[test]
    fn after_a_response_the_idle_timeout_runs_then_a_new_head_gets_the_header_timeout() {
        let start = Instant::now();
        let w = Watch::new(start);
        w.on_read(b"GET / HTTP/1.1\r\n\r\n");
        w.request_started(false);
        w.request_ended();
        assert_eq!(w.phase(), Phase::Idle);
        assert!(w.shed(Instant::now()).is_some());
        let idle_since = w.since();
        assert_eq!(
            w.check(idle_since + secs(59), T),
            Check::Until(idle_since + secs(60))
        );
        assert_eq!(w.check(idle_since + secs(60), T), Check::IdleTimedOut);
        w.on_read(b"GET");
        assert_eq!(w.phase(), Phase::Head);
        let head_since = w.since();
        assert_eq!(
            w.check(head_since + secs(10), T),
            Check::HeadTimedOut,
            "a later head gets the header timeout from its first byte"
        );
    }

    #[test]
    fn http2_frames_while_idle_are_not_a_request_head() {
        let start = Instant::now();
        let w = Watch::new(start);
        w.on_read(&PREFACE[..10]);
        w.on_read(&PREFACE[10..]);
        assert!(w.is_http2());
        w.request_started(true);
        w.request_ended();
        w.on_read(b"\0\0\x08\x06\0\0\0\0\0ping-frame");
        assert_eq!(w.phase(), Phase::Idle);
    }

    #[test]
    fn a_post_is_not_mistaken_for_the_http2_preface() {
        let w = Watch::new(Instant::now());
        w.on_read(b"P");
        w.on_read(b"OST / HTTP/1.1\r\n");
        assert!(!w.is_http2());
    }

    #[test]
    fn an_upgraded_connection_is_neither_timed_nor_shed() {
        let start = Instant::now();
        let w = Watch::new(start);
        w.on_read(b"GET /ws HTTP/1.1\r\n\r\n");
        w.request_started(false);
        w.upgraded(None);
        w.request_ended();
        assert_eq!(w.phase(), Phase::Upgraded);
        assert!(w.shed(Instant::now()).is_none());
        assert!(matches!(w.check(start + secs(1000), T), Check::Until(_)));
    }
}
