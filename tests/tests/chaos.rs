//! A short fault campaign (`ferry_tests::chaos`): a hub on a PostgreSQL
//! primary and replica, two spokes and moto's S3 behind the fault proxy,
//! clients at work while spokes, the hub and the primary are killed and
//! restarted and the provider fails, also writing shared paths at once;
//! then no invariant may be broken.
//! `cargo run --release -p ferry-chaos -- --minutes N` runs it longer.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_fault_campaign_breaks_no_invariant() {
    let report = ferry_tests::chaos::run(ferry_tests::chaos::Settings {
        duration: Duration::from_secs(30),
        clients: 3,
        seed: 7,
        paths: 8,
        shared: 3,
    })
    .await;
    eprintln!("{report}");
    assert!(
        report.faults.values().sum::<u64>() >= 5,
        "too few faults:\n{report}"
    );
    assert!(report.violations.is_empty(), "{report}");
}
