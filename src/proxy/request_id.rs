//! Every request has an id: the client's `x-request-id` when it is a sane
//! value (1 to 128 of the characters ids are made of: letters, digits and
//! `-_.:+/=@`), otherwise one made here. Nothing else gets through, so an
//! id can go into an HTML error page or a log line as it is. The upstream gets it, the
//! answer carries it back, and the access log and serve's log name it, so
//! a user's report can be matched with what the operator sees.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use http::HeaderValue;
use http::header::{HeaderMap, HeaderName};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client id taken as it is.
const MAX_LEN: usize = 128;

/// A thread's id maker: a random key and a counter, so that ids are
/// unique within the process, and unguessable enough across processes,
/// without a lock.
struct Ids {
    key: u64,
    /// The key in hex digits, the first half of every id the thread makes.
    key_hex: [u8; 16],
    next: Cell<u64>,
}

impl Ids {
    fn new() -> Self {
        let key = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let mut key_hex = [0; 16];
        hex(key, &mut key_hex);
        Ids {
            key,
            key_hex,
            next: Cell::new(0),
        }
    }
}

thread_local! {
    static IDS: Ids = Ids::new();
}

/// The request's id: the client's, when sane, or a new one.
pub fn of(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(given) if headers.get_all(&X_REQUEST_ID).iter().count() == 1 && sane(given) => {
            given.clone()
        }
        _ => generate(),
    }
}

fn sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// 32 hex digits: the thread's random key and its counter, mixed.
fn generate() -> HeaderValue {
    let id = IDS.with(|ids| {
        let count = ids.next.get();
        ids.next.set(count.wrapping_add(1));
        // splitmix64 of the counter keyed by the thread's key: distinct
        // counters give distinct values, which do not show the count.
        let mut z = ids
            .key
            .wrapping_add(count.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(&ids.key_hex);
        hex(z, &mut id[16..]);
        id
    });
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// `word` in 16 hex digits, most significant first.
fn hex(word: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().take(16).enumerate() {
        *digit = HEX[((word >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &'static [u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_bytes(value).expect("value"));
        h
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        assert_eq!(of(&with(b"abc-123_x.y:z")), "abc-123_x.y:z");
        assert_eq!(of(&with(b"dGVzdA+/==@edge")), "dGVzdA+/==@edge");
    }

    #[test]
    fn odd_client_ids_are_replaced() {
        for odd in [
            &b"has space"[..],
            b"",
            b"quote\"d",
            b"back\\slash",
            b"caf\xe9",
            b"<script>alert(1)</script>",
            b"a&b",
        ] {
            let id = of(&with(odd));
            assert_eq!(id.len(), 32, "{odd:?}");
            assert_ne!(id.as_bytes(), odd);
        }
        let long: &'static [u8] = Box::leak(vec![b'a'; MAX_LEN + 1].into_boxed_slice());
        assert_eq!(of(&with(long)).len(), 32);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
