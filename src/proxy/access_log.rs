//! The access log (`serve --access-log -|PATH`): one JSON line per request,
//! written when its answer has ended (so it holds the bytes sent and the
//! whole duration).
//!
//! The request path never waits for it: a finished request hands its
//! record to a bounded queue (`try_send`), and a thread of its own formats
//! and writes the lines. When the queue is full the record is dropped and
//! counted (`switchyard_access_log_dropped_total`). SIGHUP makes the writer
//! reopen its file, for logrotate's `create` mode.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, uri::PathAndQuery};
use serde::Serialize;

use super::request_body::Upload;

/// Records waiting for the writer at most; more are dropped and counted.
pub const QUEUE: usize = 8192;

/// How often an idle writer flushes and looks for a reopen or a stop.
const TICK: Duration = Duration::from_millis(100);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("give a file path, or - for stdout".into()),
            "-" => Ok(AccessLogTarget::Stdout),
            path => Ok(AccessLogTarget::File(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogTarget::Stdout => f.write_str("stdout"),
            AccessLogTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Lines written and records dropped, for `/metrics`.
#[derive(Debug, Default)]
pub struct AccessLogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// The request path's end of the log: hands records to the writer.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Record>,
    stats: Arc<AccessLogStats>,
}

/// The writer's thread; dropping this writes what is queued and stops it.
pub struct AccessLogWriter {
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<AccessLogStats>,
}

/// One request as the log shows it.
#[derive(Debug, Serialize)]
struct Record {
    #[serde(serialize_with = "rfc3339")]
    time: SystemTime,
    service: Option<String>,
    release: Option<String>,
    instance: Option<SocketAddr>,
    method: String,
    path: String,
    status: u16,
    /// What the proxy answered itself, as in `x-switchyard-error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    client: SocketAddr,
    request_id: String,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// A request whose answer is on its way: what is known of it, completed
/// when the answer's body ends (or is dropped).
pub(crate) struct Pending {
    log: AccessLog,
    started: Instant,
    time: SystemTime,
    method: Method,
    path: Option<PathAndQuery>,
    client: SocketAddr,
    request_id: HeaderValue,
    pub(crate) service: Option<String>,
    pub(crate) release: Option<String>,
    pub(crate) instance: Option<SocketAddr>,
    pub(crate) status: u16,
    pub(crate) error: Option<&'static str>,
    /// The client's upload, when the request had a body.
    pub(crate) bytes_in: Option<Arc<Upload>>,
    pub(crate) bytes_out: u64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// Opens the target and starts the writer.
    pub fn start(target: AccessLogTarget) -> io::Result<(AccessLog, AccessLogWriter)> {
        let sink = Sink::open(&target)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(AccessLogStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reopen = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn({
                let stats = Arc::clone(&stats);
                let stop = Arc::clone(&stop);
                let reopen = Arc::clone(&reopen);
                move || write_lines(rx, sink, target, &stats, &stop, &reopen)
            })?;
        Ok((
            AccessLog {
                tx,
                stats: Arc::clone(&stats),
            },
            AccessLogWriter {
                stop,
                reopen,
                thread: Some(thread),
                stats,
            },
        ))
    }

    /// The record of a request that has just arrived.
    pub(crate) fn begin(
        &self,
        method: &Method,
        path: Option<&PathAndQuery>,
        client: SocketAddr,
        request_id: &HeaderValue,
    ) -> Pending {
        Pending {
            log: self.clone(),
            started: Instant::now(),
            time: SystemTime::now(),
            method: method.clone(),
            path: path.cloned(),
            client,
            request_id: request_id.clone(),
            service: None,
            release: None,
            instance: None,
            status: 0,
            error: None,
            bytes_in: None,
            bytes_out: 0,
        }
    }
}

impl Pending {
    /// The answer has ended: the record goes to the writer, or is dropped
    /// and counted when the writer is behind.
    pub(crate) fn finish(self) {
        let record = Record {
            time: self.time,
            service: self.service,
            release: self.release,
            instance: self.instance,
            method: self.method.to_string(),
            path: self.path.as_ref().map_or("/", |p| p.as_str()).to_owned(),
            status: self.status,
            error: self.error,
            duration_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            bytes_in: self.bytes_in.map_or(0, |u| u.received()),
            bytes_out: self.bytes_out,
            client: self.client,
            request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
        };
        match self.log.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.log.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl AccessLogWriter {
    /// Opens the file again (after logrotate moved it away), before the
    /// next line.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Sink> {
        Ok(match target {
            AccessLogTarget::Stdout => Sink::Stdout(io::stdout()),
            AccessLogTarget::File(path) => Sink::File(BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            // One write per line under stdout's lock: lines never mix with
            // serve's own output.
            Sink::Stdout(out) => out.lock().write_all(line),
            Sink::File(file) => file.write_all(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

/// The writer's loop: format and write each record; flush when idle;
/// reopen when asked; on stop, write what is queued and end. A line
/// counts as written once it is flushed; lines a failing write or flush
/// lost are counted as dropped, and the file is opened afresh.
fn write_lines(
    rx: Receiver<Record>,
    sink: Sink,
    target: AccessLogTarget,
    stats: &AccessLogStats,
    stop: &AtomicBool,
    reopen: &AtomicBool,
) {
    let mut writer = Writer {
        sink,
        target,
        stats,
        line: Vec::with_capacity(512),
        buffered: 0,
        failing: false,
    };
    loop {
        if reopen.swap(false, Ordering::AcqRel) {
            writer.flush();
            match Sink::open(&writer.target) {
                Ok(new) => {
                    writer.sink = new;
                    tracing::info!(target = %writer.target, "access log reopened");
                }
                Err(error) => {
                    tracing::error!(target = %writer.target, %error, "cannot reopen the access log; writing on to the old file")
                }
            }
        }
        if stop.load(Ordering::Acquire) {
            while let Ok(record) = rx.try_recv() {
                writer.write(&record);
            }
            writer.flush();
            return;
        }
        match rx.recv_timeout(TICK) {
            Ok(record) => {
                writer.write(&record);
                // Write whatever else is queued before flushing once.
                while let Ok(record) = rx.try_recv() {
                    writer.write(&record);
                }
                writer.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                writer.flush();
                return;
            }
        }
    }
}

/// The writer's state: where lines go and how many wait in its buffer.
struct Writer<'a> {
    sink: Sink,
    target: AccessLogTarget,
    stats: &'a AccessLogStats,
    line: Vec<u8>,
    /// Lines written into the buffer since the last flush.
    buffered: u64,
    failing: bool,
}

impl Writer<'_> {
    fn write(&mut self, record: &Record) {
        self.line.clear();
        if serde_json::to_writer(&mut self.line, record).is_err() {
            return;
        }
        self.line.push(b'\n');
        match self.sink.write_line(&self.line) {
            Ok(()) => self.buffered += 1,
            Err(error) => self.failed(&error, 1),
        }
    }

    fn flush(&mut self) {
        let lines = std::mem::take(&mut self.buffered);
        match self.sink.flush() {
            Ok(()) => {
                self.stats.written.fetch_add(lines, Ordering::Relaxed);
                self.failing = false;
            }
            Err(error) => self.failed(&error, lines),
        }
    }

    /// `lost` more lines are gone: counted, said once while it lasts, and
    /// the file opened afresh (its buffer dropped with what it held).
    fn failed(&mut self, error: &io::Error, lost: u64) {
        let lost = lost + std::mem::take(&mut self.buffered);
        self.stats.dropped.fetch_add(lost, Ordering::Relaxed);
        if !self.failing {
            tracing::error!(target = %self.target, %error, "cannot write the access log; lines are dropped until it works again");
            self.failing = true;
        }
        if let Ok(fresh) = Sink::open(&self.target) {
            // The old buffer is discarded, not written again.
            if let Sink::File(old) = std::mem::replace(&mut self.sink, fresh) {
                let _ = old.into_parts();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_request_is_one_json_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let (log, writer) = AccessLog::start(AccessLogTarget::File(path.clone())).expect("start");
        let pq: PathAndQuery = "/services/a/x?y=1".parse().expect("path");
        let mut pending = log.begin(
            &Method::POST,
            Some(&pq),
            "127.0.0.9:5000".parse().expect("addr"),
            &HeaderValue::from_static("id-1"),
        );
        pending.service = Some("a".into());
        pending.release = Some("1.0.0".into());
        pending.status = 201;
        pending.bytes_out = 7;
        pending.finish();
        drop(writer);
        let text = std::fs::read_to_string(&path).expect("read");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(line["service"], "a");
        assert_eq!(line["release"], "1.0.0");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/services/a/x?y=1");
        assert_eq!(line["status"], 201);
        assert_eq!(line["bytes_in"], 0);
        assert_eq!(line["bytes_out"], 7);
        assert_eq!(line["client"], "127.0.0.9:5000");
        assert_eq!(line["request_id"], "id-1");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let log = AccessLog {
            tx,
            stats: Arc::default(),
        };
        let id = HeaderValue::from_static("x");
        let client = "127.0.0.1:1".parse().expect("addr");
        for _ in 0..3 {
            log.begin(&Method::GET, None, client, &id).finish();
        }
        assert_eq!(log.stats.dropped.load(Ordering::Relaxed), 2);
    }
}
