//! serve's open-files limit (RLIMIT_NOFILE): raised at start from the soft
//! limit to the hard one, and shared out between client connections and
//! everything else serve keeps open.

use std::fmt;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Where the kernel caps the hard limit when it is "unlimited".
const NR_OPEN: &str = "/proc/sys/fs/nr_open";
/// The default cap stops here whatever the file limit: every open
/// connection also costs memory (buffers, a task).
pub const MOST_BY_DEFAULT: usize = 32_768;

/// serve's file limit after it tried to raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit serve was started with (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now: how many files serve may have open.
    pub now: Option<u64>,
    /// Why it could not be raised.
    pub error: Option<String>,
}

impl FileLimit {
    /// Raises the soft limit to the hard limit (or, when the hard limit is
    /// unlimited, to the most the kernel allows).
    pub fn raise() -> FileLimit {
        let started = getrlimit(Resource::Nofile);
        let target = started.maximum.or_else(|| {
            std::fs::read_to_string(NR_OPEN)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        let mut limit = FileLimit {
            before: started.current,
            now: started.current,
            error: None,
        };
        // Unlimited already, or as high as it goes.
        let (Some(now), Some(target)) = (started.current, target) else {
            return limit;
        };
        if now >= target {
            return limit;
        }
        let raised = Rlimit {
            current: Some(target),
            maximum: started.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.now = getrlimit(Resource::Nofile).current,
            Err(error) => limit.error = Some(error.to_string()),
        }
        limit
    }

    /// The proxy's default connection cap: what is left once the admin
    /// API's connections and a reserve for everything else are set aside,
    /// halved because each proxied connection may hold one upstream
    /// connection besides its own.
    pub fn proxy_connections(&self, admin_connections: usize) -> usize {
        let Some(limit) = self.now else {
            return MOST_BY_DEFAULT;
        };
        let admin = u64::try_from(admin_connections).unwrap_or(u64::MAX);
        let budget = limit.saturating_sub(reserve(limit)).saturating_sub(admin);
        usize::try_from(budget / 2)
            .unwrap_or(usize::MAX)
            .clamp(1, MOST_BY_DEFAULT)
    }

    /// Connections the limit allows at most, if it is lower than `wanted`:
    /// one file each for the client and its upstream, beside the reserve.
    pub fn too_low_for(&self, wanted: usize) -> Option<u64> {
        let limit = self.now?;
        let room = limit.saturating_sub(reserve(limit)) / 2;
        (u64::try_from(wanted).unwrap_or(u64::MAX) > room).then_some(room)
    }
}

/// Files kept for what is not a client connection: the store, logs,
/// instances' pipes, health checks, mirrored copies, the listening
/// sockets; an eighth of the limit, at least 256 (half of a tiny limit).
fn reserve(limit: u64) -> u64 {
    (limit / 8).max(256.min(limit / 2))
}

impl fmt::Display for FileLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        write!(f, "open files limit {}", show(self.now))?;
        if let Some(error) = &self.error {
            write!(
                f,
                " (could not raise it to the hard limit: {error}; raise it with `ulimit -n` or LimitNOFILE=)"
            )
        } else if self.before != self.now {
            write!(f, " (raised from {})", show(self.before))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u64) -> FileLimit {
        FileLimit {
            before: Some(n),
            now: Some(n),
            error: None,
        }
    }

    #[test]
    fn a_common_limit_leaves_room_for_upstreams_the_admin_api_and_the_rest() {
        // 1024 - 256 reserved - 64 admin = 704 files: 352 connections with
        // an upstream each.
        assert_eq!(limit(1024).proxy_connections(64), 352);
        assert_eq!(limit(65_536).proxy_connections(64), 28_640);
    }

    #[test]
    fn the_default_cap_is_bounded_and_never_zero() {
        assert_eq!(limit(1 << 20).proxy_connections(64), MOST_BY_DEFAULT);
        assert_eq!(limit(64).proxy_connections(64), 1);
        let unlimited = FileLimit {
            before: None,
            now: None,
            error: None,
        };
        assert_eq!(unlimited.proxy_connections(64), MOST_BY_DEFAULT);
    }

    #[test]
    fn a_cap_above_what_the_limit_allows_is_told() {
        assert_eq!(limit(1024).too_low_for(10_000), Some(384));
        assert_eq!(limit(1024).too_low_for(300), None);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = getrlimit(Resource::Nofile);
        let raised = FileLimit::raise();
        assert_eq!(raised.before, before.current);
        assert!(raised.now >= before.current);
    }

    #[test]
    fn the_startup_line_says_what_serve_got() {
        let raised = FileLimit {
            before: Some(1024),
            now: Some(4096),
            error: None,
        };
        assert_eq!(
            raised.to_string(),
            "open files limit 4096 (raised from 1024)"
        );
    }
}
