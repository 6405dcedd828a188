//! Steering as the hub runs it, on tokio's paused clock: spokes leave the
//! answers when their heartbeat goes stale, when they drain, fill up or have
//! no address, and answers hold under noisy client reports.

use super::*;
use ferry_common::proto::SteeringAnnounce;

fn steering(stale_ms: u64) -> Steering {
    let mut registry = prometheus_client::registry::Registry::default();
    Steering::new(
        &SteeringConfig::default(),
        Duration::from_millis(stale_ms),
        SteeringMetrics::register(&mut registry),
    )
}

fn live(name: &str, addr: &str, heard: Instant) -> LiveSteering {
    LiveSteering {
        name: name.into(),
        announce: Some(SteeringAnnounce {
            public_addrs: vec![addr.parse().unwrap()],
            public_url: format!("http://{addr}:8080/"),
            capacity_transfers: 10,
        }),
        last_heard: heard,
        active_transfers: 0,
        draining: false,
        rtt_ms: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn answered(s: &Steering, client: &str) -> Option<String> {
    s.answer(ip(client)).target.map(|t| t.name.to_string())
}

#[tokio::test(start_paused = true)]
async fn a_silent_spoke_leaves_the_answers_once_its_heartbeat_is_stale() {
    let s = steering(2500);
    let t0 = now();
    s.refresh(vec![
        live("fra1", "192.0.2.1", t0),
        live("ams1", "192.0.2.2", t0),
    ]);
    let client = "198.51.100.7";
    let report = |pairs: &[(&str, f64)]| {
        let v: Vec<(String, f64)> = pairs.iter().map(|(a, b)| ((*a).into(), *b)).collect();
        s.observe_report(ip(client), &v)
    };
    assert_eq!(
        report(&[("fra1", 5.0), ("ams1", 40.0), ("nope", 1.0)]),
        ReportOutcome {
            accepted: 2,
            ignored: 1
        }
    );
    assert_eq!(answered(&s, client).as_deref(), Some("fra1"));
    assert_eq!(s.probe_targets()[0].1, "http://192.0.2.2:8080/v1/probe");

    // ams1 keeps sending heartbeats, fra1 goes silent.
    for _ in 0..12 {
        tokio::time::advance(Duration::from_millis(250)).await;
        s.refresh(vec![
            live("fra1", "192.0.2.1", t0),
            live("ams1", "192.0.2.2", now()),
        ]);
    }
    assert_eq!(s.status("fra1"), Some(Eligibility::StaleHeartbeat));
    assert_eq!(answered(&s, client).as_deref(), Some("ams1"));
    // Heard from again: back, and hysteresis moves the answer back only
    // because fra1 is clearly faster.
    s.refresh(vec![
        live("fra1", "192.0.2.1", now()),
        live("ams1", "192.0.2.2", now()),
    ]);
    assert_eq!(answered(&s, client).as_deref(), Some("fra1"));
}

#[tokio::test(start_paused = true)]
async fn draining_full_and_addressless_spokes_are_not_answered() {
    let s = steering(2500);
    let t = now();
    let mut draining = live("a", "192.0.2.1", t);
    draining.draining = true;
    let mut full = live("b", "192.0.2.2", t);
    full.active_transfers = 10;
    let mut bare = live("c", "192.0.2.3", t);
    bare.announce.as_mut().unwrap().public_addrs.clear();
    let mut silent = live("d", "192.0.2.4", t);
    silent.announce = None;
    s.refresh(vec![
        draining,
        full,
        bare,
        silent,
        live("e", "2001:db8::5", t),
    ]);
    assert_eq!(s.status("a"), Some(Eligibility::Draining));
    assert_eq!(s.status("b"), Some(Eligibility::OverCapacity));
    assert_eq!(s.status("c"), Some(Eligibility::NoAddresses));
    assert_eq!(s.status("d"), Some(Eligibility::NoAddresses));
    assert_eq!(s.status("e"), Some(Eligibility::Eligible));
    assert_eq!(s.status("f"), None);
    let client = ip("203.0.113.9");
    let samples: Vec<(String, f64)> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| ((*n).to_owned(), 10.0))
        .collect();
    s.observe_report(client, &samples);
    let got = s.answer(client);
    let target = got.target.expect("e is eligible");
    assert_eq!(
        (&*target.name, target.v6.len(), target.v4.len()),
        ("e", 1, 0)
    );
    assert_eq!((got.scope, got.basis), (24, Basis::Measured));
}

#[tokio::test(start_paused = true)]
async fn hysteresis_holds_under_noisy_reports_on_a_paused_clock() {
    let s = steering(2500);
    let client = "192.0.2.10";
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let mut moves = 0;
    let mut last = None;
    for _ in 0..600 {
        tokio::time::advance(Duration::from_millis(500)).await;
        let t = now();
        s.refresh(vec![live("a", "192.0.2.1", t), live("b", "192.0.2.2", t)]);
        // 40 ms and 36 ms, each sample ±10 ms: never a third apart on
        // average, so at most one move, and never back and forth.
        s.observe_report(
            ip(client),
            &[
                ("a".into(), 40.0 + 10.0 * noise()),
                ("b".into(), 36.0 + 10.0 * noise()),
            ],
        );
        let now_answer = answered(&s, client);
        if last.is_some() && now_answer != last {
            moves += 1;
        }
        last = now_answer;
    }
    assert!(moves <= 1, "the answer moved {moves} times");
}
