//! Feeds arbitrary text to the configuration loader as a hub's and as a
//! spoke's file: it must never panic, and whatever it refuses it refuses
//! with at least one problem that names the file.
#![no_main]

use std::path::Path;

use ferry_common::config::parse_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzzed.toml");
    if let Err(e) = parse_str::<ferry_hub::config::HubConfig>(text, file) {
        assert!(!e.problems.is_empty());
        assert!(e.to_string().starts_with("fuzzed.toml"));
    }
    if let Err(e) = parse_str::<ferry_spoke::config::SpokeConfig>(text, file) {
        assert!(!e.problems.is_empty());
    }
});
