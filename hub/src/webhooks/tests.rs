use super::*;

#[test]
fn signatures_match_the_specifications_example() {
    // The example of the Standard Webhooks specification's libraries.
    let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(
        sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn attempts_follow_the_schedule_and_the_answer() {
    let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
    let at = |after| match after {
        AfterAttempt::Retry(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        after_attempt(&schedule, 1, Some(204), None, 0, 0.5),
        AfterAttempt::Delivered
    );
    assert_eq!(
        after_attempt(&schedule, 1, Some(410), None, 0, 0.5),
        AfterAttempt::Gone
    );
    // ±20 % around the schedule's delay.
    assert_eq!(
        at(after_attempt(&schedule, 1, Some(503), None, 0, 0.5)),
        5_000
    );
    assert_eq!(at(after_attempt(&schedule, 1, None, None, 0, 0.0)), 4_000);
    assert_eq!(
        at(after_attempt(&schedule, 2, Some(500), None, 0, 0.99)),
        358_800
    );
    // Retry-After decides when given, within a second and a day.
    assert_eq!(
        at(after_attempt(
            &schedule,
            2,
            Some(429),
            Some(Duration::from_secs(7)),
            0,
            0.5
        )),
        7_000
    );
    assert_eq!(
        at(after_attempt(
            &schedule,
            1,
            Some(503),
            Some(Duration::ZERO),
            0,
            0.5
        )),
        1_000
    );
    assert_eq!(
        at(after_attempt(
            &schedule,
            1,
            Some(503),
            Some(Duration::from_secs(9_999_999)),
            0,
            0.5
        )),
        86_400_000
    );
    // After the schedule's last delay's attempt, it fails.
    assert_eq!(
        after_attempt(
            &schedule,
            3,
            Some(503),
            Some(Duration::from_secs(1)),
            0,
            0.5
        ),
        AfterAttempt::Failed
    );
    assert_eq!(
        after_attempt(&[], 1, None, None, 0, 0.5),
        AfterAttempt::Failed
    );
    assert_eq!(retry_after("12"), Some(Duration::from_secs(12)));
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after("soon"), None);
}

#[test]
fn endpoint_urls_are_checked_like_provider_endpoints_but_keep_their_query() {
    let strict = EndpointPolicy::PUBLIC_ONLY;
    assert_eq!(
        check_url("https://Hooks.Example.com/in?token=abc", strict).unwrap(),
        "https://hooks.example.com/in?token=abc"
    );
    for internal in [
        "http://127.0.0.1:9000/",
        "http://localhost/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://10.0.0.8/",
        "http://2130706433/",
    ] {
        let err = check_url(internal, strict).unwrap_err();
        assert!(
            err.contains("webhooks.allow_private_endpoints"),
            "{internal}: {err}"
        );
        check_url(internal, EndpointPolicy::ANY).unwrap();
    }
    for bad in [
        "ftp://hooks.example.com/",
        "hooks.example.com",
        "https://user:pw@hooks.example.com/",
        "https://hooks.example.com/#x",
    ] {
        assert!(check_url(bad, EndpointPolicy::ANY).is_err(), "{bad}");
    }
    assert!(
        check_url(
            &format!("https://h.example.com/{}", "a".repeat(2048)),
            strict
        )
        .is_err()
    );
}

fn claimed() -> Claimed {
    Claimed {
        row: 1,
        msg_id: "msg_1".into(),
        endpoint_id: "wh_1".into(),
        payload: "{}".into(),
        attempts: 0,
        in_round: 0,
        created_at: 0,
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_an_internal_address_is_refused_when_sending() {
    // A listener that would answer, on loopback, behind a public-looking
    // name: the guarded resolver refuses the name, nothing connects.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let lookup: Lookup = Arc::new(move |_host| {
        Box::pin(async move { Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]) })
    });
    let strict = EndpointPolicy::PUBLIC_ONLY;
    let c = client(strict, lookup, Duration::from_secs(5));
    let sent = send(
        &c,
        strict,
        &format!("http://hooks.example.com:{port}/"),
        &[vec![1]],
        &claimed(),
    )
    .await;
    assert_eq!(
        (sent.attempt.status, sent.attempt.error.as_deref()),
        (None, Some("refused"))
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "nothing connected");
    // An IP literal is refused before any request is made.
    let sent = send(
        &c,
        strict,
        &format!("http://127.0.0.1:{port}/"),
        &[vec![1]],
        &claimed(),
    )
    .await;
    assert_eq!(sent.attempt.error.as_deref(), Some("refused"));
}
