//! The answers to pending HTTP-01 challenges, which the proxy's cleartext
//! listener gives at `/.well-known/acme-challenge/TOKEN`: those of the
//! orders this serve runs, and, on a node of a fleet, those the leading
//! node keeps in the store for the orders it runs (the CA may reach any
//! node of the fleet).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::CHALLENGE_PREFIX;

/// The key authorizations of pending HTTP-01 challenges, by token.
#[derive(Debug, Clone, Default)]
pub struct AcmeChallenges {
    tokens: Arc<Mutex<Tokens>>,
}

#[derive(Debug, Default)]
struct Tokens {
    /// Of the orders this serve runs.
    own: HashMap<String, String>,
    /// As the fleet's store has them (read again whenever they change).
    fleet: HashMap<String, String>,
}

impl AcmeChallenges {
    fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to `GET /.well-known/acme-challenge/TOKEN`, when `path`
    /// is such a request for a token of a pending order.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        let tokens = self.tokens();
        tokens
            .own
            .get(token)
            .or_else(|| tokens.fleet.get(token))
            .cloned()
    }

    /// Answers `token` with `key_authorization` until [`Self::remove`].
    pub(super) fn add(&self, token: &str, key_authorization: &str) {
        self.tokens()
            .own
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(super) fn remove(&self, token: &str) {
        self.tokens().own.remove(token);
    }

    /// The fleet's pending challenges are `stored` now.
    pub(super) fn follow(&self, stored: Vec<(String, String)>) {
        self.tokens().fleet = stored.into_iter().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_answered_from_this_serve_or_from_the_fleet_until_it_goes() {
        let challenges = AcmeChallenges::default();
        let path = |token: &str| format!("{CHALLENGE_PREFIX}{token}");
        assert_eq!(challenges.answer(&path("a")), None);
        challenges.add("a", "a.key");
        challenges.follow(vec![("b".into(), "b.key".into())]);
        assert_eq!(challenges.answer(&path("a")).as_deref(), Some("a.key"));
        assert_eq!(challenges.answer(&path("b")).as_deref(), Some("b.key"));
        assert_eq!(challenges.answer("/other/a"), None);
        challenges.remove("a");
        challenges.follow(Vec::new());
        assert_eq!(challenges.answer(&path("a")), None);
        assert_eq!(challenges.answer(&path("b")), None);
    }
}
