//! The model on made-up time: the fastest eligible spoke per prefix, both
//! hysteresis margins, hints and the hub as fallbacks, expiry, implausible
//! samples, the prefix table's bound and forgotten spokes.

use super::*;
use std::net::Ipv4Addr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn all(_: &str) -> bool {
    true
}

/// A deterministic noise source: values in -1..1.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

#[test]
fn the_fastest_eligible_spoke_answers_per_prefix() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings::default());
    m.observe(t0, ip("192.0.2.10"), "fra1", 12.0, Source::ClientProbe)
        .unwrap();
    m.observe(t0, ip("192.0.2.11"), "ams1", 30.0, Source::SpokeObserved)
        .unwrap();
    m.observe(t0, ip("198.51.100.1"), "fra1", 40.0, Source::ClientProbe)
        .unwrap();
    m.observe(t0, ip("198.51.100.2"), "ams1", 9.0, Source::ClientProbe)
        .unwrap();

    let a = m.answer(t0, ip("192.0.2.200"), &all);
    assert_eq!(a.spoke.as_deref(), Some("fra1"));
    assert_eq!((a.basis, a.scope, a.switched), (Basis::Measured, 24, true));
    let b = m.answer(t0, ip("198.51.100.99"), &all);
    assert_eq!(b.spoke.as_deref(), Some("ams1"));
    // Asked again: the same answer, not a switch.
    assert!(!m.answer(t0, ip("192.0.2.1"), &all).switched);
    // fra1 not eligible (tunnel down): the next fastest, at once.
    let c = m.answer(t0, ip("192.0.2.1"), &|s: &str| s != "fra1");
    assert_eq!(c.spoke.as_deref(), Some("ams1"));
    assert!(c.switched);
}

#[test]
fn noisy_samples_do_not_make_answers_flap() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings::default());
    let client = ip("203.0.113.5");
    let mut noise = Noise(7);
    // Two spokes at 30 ms and 26 ms, each sample ±8 ms. The answer may
    // start on either and move once, to the faster, when noise opens
    // the margin; it must never go back and forth.
    let mut answers: Vec<Arc<str>> = Vec::new();
    for i in 0..2000u64 {
        let now = t0 + Duration::from_millis(100 * i);
        m.observe(
            now,
            client,
            "a",
            30.0 + 8.0 * noise.next(),
            Source::SpokeObserved,
        )
        .unwrap();
        m.observe(
            now,
            client,
            "b",
            26.0 + 8.0 * noise.next(),
            Source::SpokeObserved,
        )
        .unwrap();
        let a = m.answer(now, client, &all);
        if a.switched {
            answers.push(a.spoke.unwrap());
        }
    }
    assert!(answers.len() <= 2, "the answer flapped: {answers:?}");
    assert_eq!(answers.last().map(|s| &**s), Some("b"), "{answers:?}");

    // Now b becomes clearly faster (a third and 10 ms): the answer moves.
    let mut m = Model::new(Settings::default());
    let t1 = t0;
    m.observe(t1, client, "a", 30.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t1, client, &all).spoke.as_deref(), Some("a"));
    m.observe(t1, client, "b", 25.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(
        m.answer(t1, client, &all).spoke.as_deref(),
        Some("a"),
        "5 ms faster is not enough"
    );
    for i in 1..40u64 {
        let now = t1 + Duration::from_secs(i);
        m.observe(now, client, "b", 15.0, Source::ClientProbe)
            .unwrap();
        m.observe(now, client, "a", 30.0, Source::ClientProbe)
            .unwrap();
    }
    let moved = m.answer(t1 + Duration::from_secs(40), client, &all);
    assert_eq!(moved.spoke.as_deref(), Some("b"));
    assert!(moved.switched);
}

#[test]
fn both_margins_are_needed() {
    let t0 = Instant::now();
    let client = ip("192.0.2.1");
    // 100 ms → 85 ms: 15 ms faster but not a third.
    let mut m = Model::new(Settings::default());
    m.observe(t0, client, "a", 100.0, Source::ClientProbe)
        .unwrap();
    m.answer(t0, client, &all);
    m.observe(t0, client, "b", 85.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("a"));
    // 12 ms → 6 ms: half the time but only 6 ms.
    let mut m = Model::new(Settings::default());
    m.observe(t0, client, "a", 12.0, Source::ClientProbe)
        .unwrap();
    m.answer(t0, client, &all);
    m.observe(t0, client, "b", 6.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("a"));
    // 45 ms → 30 ms: both.
    let mut m = Model::new(Settings::default());
    m.observe(t0, client, "a", 45.0, Source::ClientProbe)
        .unwrap();
    m.answer(t0, client, &all);
    m.observe(t0, client, "b", 30.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("b"));
}

#[test]
fn hints_then_the_hub_answer_without_measurements() {
    let t0 = Instant::now();
    let settings = Settings {
        hints: vec![
            (
                Prefix::parse("10.0.0.0/8").unwrap(),
                vec!["fra1".into(), "ams1".into()],
            ),
            (Prefix::parse("10.9.0.0/16").unwrap(), vec!["lhr1".into()]),
        ],
        ..Settings::default()
    };
    let mut m = Model::new(settings);
    let a = m.answer(t0, ip("10.1.2.3"), &all);
    assert_eq!((a.spoke.as_deref(), a.basis), (Some("fra1"), Basis::Hint));
    // The most specific hint wins.
    assert_eq!(
        m.answer(t0, ip("10.9.1.1"), &all).spoke.as_deref(),
        Some("lhr1")
    );
    // The first eligible spoke of the hint.
    let b = m.answer(t0, ip("10.1.2.3"), &|s: &str| s == "ams1");
    assert_eq!(b.spoke.as_deref(), Some("ams1"));
    // No hint covers it, or none of its spokes is eligible: the hub.
    let c = m.answer(t0, ip("192.0.2.1"), &all);
    assert_eq!((c.spoke, c.basis), (None, Basis::Hub));
    let d = m.answer(t0, ip("10.9.1.1"), &|s: &str| s != "lhr1");
    assert_eq!((d.spoke, d.basis), (None, Basis::Hub));
    // Unknown prefixes leave no state behind.
    assert_eq!(m.prefix_count(), 0);
}

#[test]
fn stale_samples_stop_counting_and_expire() {
    let t0 = Instant::now();
    let settings = Settings {
        sample_ttl: Duration::from_secs(60),
        hints: vec![(Prefix::parse("0.0.0.0/0").unwrap(), vec!["hint".into()])],
        ..Settings::default()
    };
    let mut m = Model::new(settings);
    let client = ip("192.0.2.1");
    m.observe(t0, client, "a", 20.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t0, client, &all).basis, Basis::Measured);
    let later = t0 + Duration::from_secs(61);
    let a = m.answer(later, client, &all);
    assert_eq!((a.spoke.as_deref(), a.basis), (Some("hint"), Basis::Hint));
    // A new sample after a long gap starts the average afresh.
    m.observe(later, client, "a", 80.0, Source::ClientProbe)
        .unwrap();
    let view = m.snapshot(later);
    assert_eq!(view[0].spokes[0].rtt_ms, 80.0);
    assert_eq!(view[0].spokes[0].probe_samples, 1);
    m.expire(later + Duration::from_secs(61));
    assert_eq!(m.prefix_count(), 0);
}

#[test]
fn implausible_samples_are_refused_and_prefixes_are_bounded() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings {
        max_prefixes: 3,
        ..Settings::default()
    });
    let c = ip("192.0.2.1");
    for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, 20_000.0] {
        assert_eq!(
            m.observe(t0, c, "a", bad, Source::ClientProbe),
            Err(Rejected::Implausible)
        );
    }
    assert_eq!(m.prefix_count(), 0);
    for i in 0..5u64 {
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, i as u8, 1));
        m.observe(
            t0 + Duration::from_secs(i),
            client,
            "a",
            10.0,
            Source::ClientProbe,
        )
        .unwrap();
    }
    assert_eq!(m.prefix_count(), 3);
    let kept: Vec<String> = m
        .snapshot(t0 + Duration::from_secs(5))
        .iter()
        .map(|p| p.prefix.to_string())
        .collect();
    assert_eq!(kept, ["10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24"]);
}

#[test]
fn a_forgotten_spoke_leaves_every_answer() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings::default());
    let c = ip("2001:db8:5::1");
    m.observe(t0, c, "a", 5.0, Source::SpokeObserved).unwrap();
    m.observe(t0, c, "b", 50.0, Source::SpokeObserved).unwrap();
    let first = m.answer(t0, c, &all);
    assert_eq!((first.spoke.as_deref(), first.scope), (Some("a"), 48));
    m.forget_spoke("a");
    assert_eq!(m.answer(t0, c, &all).spoke.as_deref(), Some("b"));
    assert!(m.snapshot(t0)[0].spokes.iter().all(|s| &*s.spoke != "a"));
}

#[test]
fn a_spokes_own_outliers_are_refused_until_a_run_shows_a_real_change() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings::default());
    let client = ip("203.0.113.9");
    for i in 0..3 {
        m.observe(
            t0 + Duration::from_secs(i),
            client,
            "fra1",
            40.0,
            Source::SpokeObserved,
        )
        .unwrap();
    }
    m.observe(t0, client, "ams1", 30.0, Source::ClientProbe)
        .unwrap();
    assert_eq!(m.answer(t0, client, &all).spoke.as_deref(), Some("ams1"));
    // fra1 suddenly claims 0.5 ms: refused, nine times over…
    let mut t = t0 + Duration::from_secs(3);
    for _ in 1..OUTLIER_RUN {
        t += Duration::from_secs(1);
        assert_eq!(
            m.observe(t, client, "fra1", 0.5, Source::SpokeObserved),
            Err(Rejected::Outlier)
        );
        assert_eq!(m.answer(t, client, &all).spoke.as_deref(), Some("ams1"));
    }
    // …and taken on the tenth in a row, as a changed route would be.
    t += Duration::from_secs(1);
    m.observe(t, client, "fra1", 0.5, Source::SpokeObserved)
        .unwrap();
    assert_eq!(m.answer(t, client, &all).spoke.as_deref(), Some("fra1"));
    // A sample within a factor of four resets the run; probes are not judged.
    let c2 = ip("198.51.100.9");
    for i in 0..3 {
        m.observe(
            t0 + Duration::from_secs(i),
            c2,
            "fra1",
            40.0,
            Source::SpokeObserved,
        )
        .unwrap();
    }
    assert_eq!(
        m.observe(t, c2, "fra1", 1.0, Source::SpokeObserved),
        Err(Rejected::Outlier)
    );
    m.observe(t, c2, "fra1", 35.0, Source::SpokeObserved)
        .unwrap();
    m.observe(t, c2, "fra1", 1.0, Source::ClientProbe).unwrap();
}

#[test]
fn one_spokes_own_samples_hold_and_add_networks_within_its_budget() {
    let t0 = Instant::now();
    let mut m = Model::new(Settings {
        spoke_limits: super::budget::Limits {
            max_networks: 50,
            new_networks_per_min: 20,
        },
        ..Settings::default()
    });
    let net = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + (i << 8)));
    let taken = (0..100)
        .filter(|&i| {
            m.observe(t0, net(i), "rogue", 0.01, Source::SpokeObserved)
                .is_ok()
        })
        .count();
    assert_eq!(taken, 20, "a burst of new networks is bounded");
    assert_eq!(
        m.observe(t0, net(200), "rogue", 0.01, Source::SpokeObserved),
        Err(Rejected::OverBudget)
    );
    // Networks it holds it may go on measuring; other spokes are not held back.
    m.observe(t0, net(0), "rogue", 0.02, Source::SpokeObserved)
        .unwrap();
    m.observe(t0, net(200), "fra1", 20.0, Source::SpokeObserved)
        .unwrap();
    // Over time it grows to its cap and no further.
    let mut t = t0;
    let mut i = 100;
    for _ in 0..20 {
        t += Duration::from_secs(60);
        for _ in 0..30 {
            let _ = m.observe(t, net(i), "rogue", 0.01, Source::SpokeObserved);
            i += 1;
        }
    }
    assert_eq!(m.networks_held("rogue"), 50);
    // Expired networks give their place back.
    m.expire(t + Duration::from_secs(601));
    assert_eq!(m.networks_held("rogue"), 0);
    assert!(
        m.observe(
            t + Duration::from_secs(700),
            net(999),
            "rogue",
            1.0,
            Source::SpokeObserved
        )
        .is_ok()
    );
}
