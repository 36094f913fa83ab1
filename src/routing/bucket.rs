//! Sticky bucketing: a client key falls in one of 100 buckets, the same
//! every time. The scheme is Unleash's gradual rollout,
//! `murmur3_x86_32("GROUP:KEY", seed 0) % 100 + 1`, so a population in
//! Switchyard is the population of an Unleash flag with the same group id.

use std::io::Read;
use std::net::IpAddr;

/// The bucket of `key` in `group`: 1 to 100.
pub fn bucket(group: &str, key: &str) -> u32 {
    let mut input = group.as_bytes().chain(&b":"[..]).chain(key.as_bytes());
    // Reading from byte slices cannot fail.
    let hash = murmur3::murmur3_32(&mut input, 0).unwrap_or(0);
    hash % 100 + 1
}

/// Seed for the client token, so it is not the bucket hash itself.
const TOKEN_SEED: u32 = 0x5359_4152;

/// The key of a client known only by its address: an opaque token that
/// Switchyard also sets as its cookie, so the client keeps its bucket when
/// its address changes.
pub fn client_token(ip: IpAddr) -> String {
    let text = ip.to_string();
    let hash = murmur3::murmur3_32(&mut text.as_bytes(), TOKEN_SEED).unwrap_or(0);
    format!("c{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_agree_with_unleash() {
        // The values Unleash's client specifications check.
        assert_eq!(bucket("gr1", "123"), 73);
        assert_eq!(bucket("groupX", "999"), 25);
    }

    #[test]
    fn ten_percent_of_ten_thousand_keys_is_within_one_and_a_half_points() {
        let inside = (0..10_000)
            .filter(|i| bucket("hello", &format!("user-{i}")) <= 10)
            .count();
        let share = inside as f64 / 100.0;
        assert!((8.5..=11.5).contains(&share), "{share}%");
    }

    #[test]
    fn client_tokens_are_stable_and_distinct() {
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(client_token(a), client_token(a));
        assert_ne!(client_token(a), client_token(b));
    }

    proptest! {
        #[test]
        fn every_key_has_a_bucket_from_1_to_100(group in ".{0,20}", key in ".{0,40}") {
            let b = bucket(&group, &key);
            prop_assert!((1..=100).contains(&b));
            prop_assert_eq!(b, bucket(&group, &key));
        }
    }
}
