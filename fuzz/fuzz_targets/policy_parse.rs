//! Arbitrary bytes, read as UTF-8, through the policy file parser, the
//! validator and the compiler. Nothing may panic, and a policy that
//! validates must compile.
//!
//! `fuzz/run 60` (stable toolchain, no sanitizer), or
//! `cargo +nightly fuzz run policy_parse` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::model::{ApiVersionSource, TrafficPolicy};
use switchyard::routing::CompiledPolicy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(policy) = TrafficPolicy::from_toml(&text) else {
        return;
    };
    // Every release the policy names counts as running, so validation
    // goes past the release checks to the rules.
    let running = policy.targets();
    let valid = policy.validate(&running, None);
    let compiled =
        CompiledPolicy::<()>::compile("fuzz", &policy, &ApiVersionSource::default(), |_| None);
    if valid.is_ok() {
        if let Err(error) = compiled {
            panic!("a valid policy does not compile: {error}\n{text}");
        }
    }
});
