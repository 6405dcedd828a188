//! The hub's steering DNS, asked with Debian's `dig` and with hickory's
//! client: the zone's records and error codes, EDNS Client Subnet, client
//! networks steered to the spoke their probes found fastest (one spoke
//! behind a delay proxy), and spokes leaving the answers when they die or
//! drain.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ferry_tests::delay_proxy::DelayProxy;
use ferry_tests::dns::{addresses, ask, dig, dig_short, dig_status, subnet_scope, until_eligible};
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::tenant;
use ferry_tests::{Api, Hub, HubOptions, Spoke, SpokeOptions, eventually, metric};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::ClientSubnet;
use serde_json::json;

const ZONE: &str = "ferry.test";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dns_hub() -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: format!("[dns]\nlisten = \"127.0.0.1:0\"\nzone = \"{ZONE}\"\n"),
        ..HubOptions::default()
    })
}

/// A spoke listening on `listen` (127.0.0.2, 127.0.0.3, …), which it also
/// announces as its public address.
fn spoke_on(hub: &Hub, name: &str, listen: &str) -> Spoke {
    let token = hub.spoke_token(name, None);
    let opts = SpokeOptions {
        listen_ip: Some(ip(listen)),
        ..SpokeOptions::default()
    };
    Spoke::start_with(hub, name, &token, &opts).unwrap_or_else(|log| panic!("{log}"))
}

/// A query as a resolver would send it, with EDNS and maybe ECS.
fn query_bytes(name: &str, qtype: RecordType, subnet: Option<ClientSubnet>) -> Vec<u8> {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(s) = subnet {
        edns.options_mut().insert(EdnsOption::Subnet(s));
    }
    m.set_edns(edns);
    m.to_vec().unwrap()
}

fn dns(hub: &Hub) -> SocketAddr {
    hub.dns_addr.expect("the hub runs DNS")
}

/// The time one `GET` of `url` takes on a warm connection, in
/// milliseconds: the fastest of three after a first request.
async fn probe_ms(api: &Api, url: &str) -> f64 {
    let probe = Api {
        base: url.to_owned(),
        ..api.clone()
    };
    probe.get("").send().await.expect(204);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        probe.get("").send().await.expect(204);
        best = best.min(started.elapsed().as_secs_f64() * 1000.0);
    }
    best
}

#[tokio::test]
async fn dig_and_hickory_get_the_zone_records_and_codes() {
    ferry_tests::install_crypto_provider();
    let hub = dns_hub();
    let _fra1 = spoke_on(&hub, "fra1", "127.0.0.2");
    until_eligible(&hub, &["fra1"]).await;
    let server = dns(&hub);

    // SOA and NS at the apex, with glue for hub.<zone>.
    let soa = dig_short(server, ZONE, "SOA", &[]);
    assert!(
        soa[0].starts_with("hub.ferry.test. hostmaster.ferry.test. "),
        "{soa:?}"
    );
    assert!(soa[0].ends_with(" 3600 600 86400 20"), "{soa:?}");
    assert_eq!(dig_short(server, ZONE, "NS", &[]), ["hub.ferry.test."]);
    let ns = dig(server, &[ZONE, "NS", "+norecurse"]);
    assert!(ns.contains(" aa"), "authoritative: {ns}");
    assert!(
        ns.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["hub.ferry.test.", "20", "IN", "A", "127.0.0.1"]),
        "glue: {ns}"
    );
    assert!(!ns.contains(" ra"), "no recursion offered: {ns}");

    // The hub's name, a spoke's name, and api (no measurements: the hub).
    assert_eq!(dig_short(server, "hub.ferry.test", "A", &[]), ["127.0.0.1"]);
    assert_eq!(
        dig_short(server, "fra1.ferry.test", "A", &[]),
        ["127.0.0.2"]
    );
    assert_eq!(dig_short(server, "api.ferry.test", "A", &[]), ["127.0.0.1"]);
    let api = dig(server, &["api.ferry.test", "A"]);
    assert!(
        api.lines()
            .any(|l| l.split_whitespace().take(4).collect::<Vec<_>>()
                == ["api.ferry.test.", "20", "IN", "A"]),
        "TTL 20: {api}"
    );
    // No IPv6 anywhere: NODATA, with the SOA for negative caching.
    let aaaa = dig(server, &["api.ferry.test", "AAAA"]);
    assert_eq!(dig_status(&aaaa), "NOERROR");
    assert!(
        aaaa.contains("ANSWER: 0") && aaaa.contains("AUTHORITY: 1"),
        "{aaaa}"
    );

    // Names that do not exist, and names outside the zone.
    let nx = dig(server, &["nope.ferry.test", "A"]);
    assert_eq!(dig_status(&nx), "NXDOMAIN", "{nx}");
    assert_eq!(
        dig_status(&dig(server, &["x.api.ferry.test", "A"])),
        "NXDOMAIN"
    );
    assert_eq!(dig_status(&dig(server, &["example.com", "A"])), "REFUSED");
    assert_eq!(
        dig_status(&dig(server, &["version.bind", "TXT", "CH"])),
        "REFUSED"
    );
    // Over TCP too.
    assert_eq!(
        dig_short(server, "fra1.ferry.test", "A", &["+tcp"]),
        ["127.0.0.2"]
    );

    // ECS: the answer for api holds for the steering prefix (/24); the
    // others do not depend on the client (scope 0).
    let ecs = dig(server, &["api.ferry.test", "A", "+subnet=192.0.2.0/24"]);
    assert!(ecs.contains("CLIENT-SUBNET: 192.0.2.0/24/24"), "{ecs}");
    let ecs = dig(server, &["hub.ferry.test", "A", "+subnet=192.0.2.0/24"]);
    assert!(ecs.contains("CLIENT-SUBNET: 192.0.2.0/24/0"), "{ecs}");

    // hickory's client, over UDP and TCP.
    for tcp in [false, true] {
        let soa = ask(server, tcp, "ferry.test.", RecordType::SOA, None).await;
        assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
        assert!(soa.metadata.authoritative);
        let spoke = ask(server, tcp, "fra1.ferry.test.", RecordType::A, None).await;
        assert_eq!(addresses(&spoke), [ip("127.0.0.2")]);
        let nx = ask(server, tcp, "ghost.ferry.test.", RecordType::A, None).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        let refused = ask(server, tcp, "example.org.", RecordType::A, None).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
        let subnet = ClientSubnet::new(ip("2001:db8:7::"), 48, 0);
        let api = ask(server, tcp, "api.ferry.test.", RecordType::A, Some(subnet)).await;
        assert_eq!(subnet_scope(&api), Some((48, 48)));
    }

    // Every answer was counted, by type and code.
    let counted = metric(
        &hub.metrics_url(),
        "ferry_dns_queries_total",
        &[("transport", "udp"), ("qtype", "A"), ("rcode", "NXDOMAIN")],
    )
    .await;
    assert!(counted >= 3.0, "{counted}");
    assert!(
        metric(
            &hub.metrics_url(),
            "ferry_dns_client_subnet_queries_total",
            &[("present", "true")]
        )
        .await
            >= 4.0
    );
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_nothing_and_the_server_carries_on() {
    let hub = dns_hub();
    let server = dns(&hub);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut answers = 0;
    // Too short for a header; a response; a question cut short; ECS with
    // bits past its prefix; random bytes.
    let mut packets: Vec<Vec<u8>> = vec![
        vec![0x12],
        {
            let mut p = query_bytes("api.ferry.test", RecordType::A, None);
            p[2] |= 0x80;
            p
        },
        vec![
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, 1, 2,
        ],
        query_bytes(
            "api.ferry.test",
            RecordType::A,
            Some(ClientSubnet::new(ip("198.51.100.0"), 20, 0)),
        ),
    ];
    let mut x = 77u64;
    for _ in 0..50 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 12 + (x >> 58) as usize;
        packets.push(
            (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect(),
        );
    }
    for p in &packets {
        socket.send(p).await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
        {
            answers += 1;
            let m = hickory_proto::op::Message::from_vec(&buf[..n]).expect("answers parse");
            assert_eq!(&buf[..2], &p[..2], "an answer echoes the id");
            assert!(
                matches!(
                    m.metadata.response_code,
                    ResponseCode::FormErr
                        | ResponseCode::NotImp
                        | ResponseCode::Refused
                        | ResponseCode::NXDomain
                        | ResponseCode::NoError
                ),
                "{m:?}"
            );
        }
    }
    assert!(answers > 0, "well-formed headers get FORMERR");
    // The bad ECS one, precisely: FORMERR.
    socket.send(&packets[3]).await.unwrap();
    let n = socket.recv(&mut buf).await.unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // A TCP stream that is not DNS is closed; the server still answers.
    let mut junk = tokio::net::TcpStream::connect(server).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    junk.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "junk gets no answer");
    assert_eq!(dig_short(server, "hub.ferry.test", "A", &[]), ["127.0.0.1"]);
    assert!(
        metric(
            &hub.metrics_url(),
            "ferry_dns_dropped_total",
            &[("reason", "malformed")]
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn each_client_network_is_steered_to_the_spoke_its_probes_found_faster() {
    ferry_tests::install_crypto_provider();
    let hub = dns_hub();
    let fra1 = spoke_on(&hub, "fra1", "127.0.0.2");
    let ams1 = spoke_on(&hub, "ams1", "127.0.0.3");
    until_eligible(&hub, &["fra1", "ams1"]).await;
    let server = dns(&hub);
    // Delay proxies stand for the longer paths; their own connections to
    // the spokes come from 127.0.9.1, a network of their own.
    let delay = Duration::from_millis(30);
    let far_ams = DelayProxy::start(ams1.addr, delay, ip("127.0.9.1")).await;
    let far_fra = DelayProxy::start(fra1.addr, delay, ip("127.0.9.1")).await;
    let t = tenant(&hub.url(), "alpha", &hub.data_dir).await;

    // The targets to probe, as a client gets them (through a spoke).
    let targets = Api::new(fra1.url())
        .as_token(&t.key)
        .get("/v1/spokes/probe-targets")
        .send()
        .await
        .expect(200)
        .json();
    let url_of = |name: &str| {
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["spoke"] == name)
            .unwrap_or_else(|| panic!("{name} is no probe target: {targets}"))["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(url_of("fra1"), format!("{}/v1/probe", fra1.url()));
    assert_eq!(url_of("ams1"), format!("{}/v1/probe", ams1.url()));
    assert_eq!(targets["report_to"], "/v1/steering/reports");
    // The probe needs no credentials and is never cached.
    let p = Api::new(ams1.url())
        .get("/v1/probe")
        .send()
        .await
        .expect(204);
    assert_eq!(p.header("cache-control").as_deref(), Some("no-store"));

    // Clients in 127.0.0.0/24 reach ams1 only through the delay; clients
    // in 127.0.1.0/24 reach fra1 only through it.
    for (source, slow, fast, report_via) in [
        ("127.0.0.1", "ams1", "fra1", &fra1),
        ("127.0.1.1", "fra1", "ams1", &ams1),
    ] {
        let client = Api::from_source("http://unused", ip(source)).as_token(&t.key);
        let slow_url = if slow == "ams1" {
            format!("{}/v1/probe", far_ams.url())
        } else {
            format!("{}/v1/probe", far_fra.url())
        };
        let slow_ms = probe_ms(&client, &slow_url).await;
        let fast_ms = probe_ms(&client, &url_of(fast)).await;
        assert!(slow_ms > fast_ms + 20.0, "{slow_ms} vs {fast_ms}");
        let outcome = Api {
            base: report_via.url(),
            ..client.clone()
        }
        .post("/v1/steering/reports")
        .json(&json!({ "samples": [
            { "spoke": slow, "rtt_ms": slow_ms },
            { "spoke": fast, "rtt_ms": fast_ms },
        ]}))
        .send()
        .await
        .expect(202)
        .json();
        assert_eq!(outcome, json!({ "accepted": 2, "ignored": 0 }));
    }

    // Through a resolver with ECS, and asked directly from each network.
    let near = |subnet: &str| {
        dig_short(
            server,
            "api.ferry.test",
            "A",
            &[&format!("+subnet={subnet}")],
        )
    };
    assert_eq!(near("127.0.0.0/24"), ["127.0.0.2"]);
    assert_eq!(near("127.0.1.0/24"), ["127.0.0.3"]);
    let scoped = dig(server, &["api.ferry.test", "A", "+subnet=127.0.1.0/24"]);
    assert!(
        scoped.contains("CLIENT-SUBNET: 127.0.1.0/24/24"),
        "{scoped}"
    );
    assert_eq!(
        dig_short(server, "api.ferry.test", "A", &["-b", "127.0.1.1"]),
        ["127.0.0.3"]
    );
    assert_eq!(
        dig_short(server, "api.ferry.test", "A", &["-b", "127.0.0.1"]),
        ["127.0.0.2"]
    );

    // The operator's view shows both networks, their samples and answers.
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let view = admin
        .get("/v1/steering?client=127.0.1.9")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(view["client"]["spoke"], "ams1", "{view}");
    assert_eq!(view["client"]["basis"], "measured");
    let entry = &view["prefixes"][0];
    assert_eq!(entry["prefix"], "127.0.1.0/24", "{view}");
    assert_eq!(entry["answer"], "ams1");
    assert_eq!(entry["spokes"][0]["spoke"], "ams1");
    assert_eq!(entry["spokes"][1]["samples"]["probe"], 1);
    let all = admin.get("/v1/steering").send().await.expect(200).json();
    let nets: Vec<&str> = all["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prefix"].as_str().unwrap())
        .collect();
    assert!(
        nets.contains(&"127.0.0.0/24") && nets.contains(&"127.0.1.0/24"),
        "{all}"
    );
    let spokes = admin.get("/v1/spokes/fra1").send().await.expect(200).json();
    assert_eq!(spokes["steering"], "eligible", "{spokes}");
    assert_eq!(
        spokes["tunnel"]["steering"]["public_addrs"],
        json!(["127.0.0.2"])
    );
    assert!(
        metric(
            &hub.metrics_url(),
            "ferry_dns_answers_total",
            &[("spoke", "ams1")]
        )
        .await
            >= 2.0
    );

    // Spokes report the kernel RTT of their own client connections too:
    // the proxies' connections came from 127.0.9.0/24.
    assert!(
        eventually(Duration::from_secs(10), async || {
            let v = admin
                .get("/v1/steering?client=127.0.9.1")
                .send()
                .await
                .json();
            v["prefixes"][0]["spokes"].as_array().is_some_and(|s| {
                s.len() == 2 && s.iter().all(|e| e["samples"]["spoke"].as_u64() >= Some(1))
            })
        })
        .await,
        "no spoke-observed samples arrived"
    );

    // Bad reports are refused with a clear error.
    let bad = Api::new(hub.url()).as_token(&t.key);
    for body in [
        json!({ "samples": [] }),
        json!({ "samples": [{ "spoke": "fra1", "rtt_ms": -3 }] }),
        json!({ "samples": [{ "spoke": "fra1", "rtt_ms": 99999 }] }),
    ] {
        bad.post("/v1/steering/reports")
            .json(&body)
            .send()
            .await
            .expect_problem(400, "invalid_field");
    }
    // A spoke named twice counts once.
    let twice = bad
        .post("/v1/steering/reports")
        .json(&json!({ "samples": [{ "spoke": "fra1", "rtt_ms": 1 }, { "spoke": "fra1", "rtt_ms": 2 }] }))
        .send()
        .await
        .expect(202)
        .json();
    assert_eq!(
        (twice["accepted"].as_u64(), twice["ignored"].as_u64()),
        (Some(1), Some(1))
    );
    bad.post("/v1/steering/reports")
        .json(&json!({ "samples": [{ "spoke": "fra1", "rtt_ms": 1, "extra": 1 }] }))
        .send()
        .await
        .expect_problem(400, "invalid_json");
    Api::new(hub.url())
        .post("/v1/steering/reports")
        .json(&json!({ "samples": [{ "spoke": "fra1", "rtt_ms": 1 }] }))
        .send()
        .await
        .expect_problem(401, "unauthorized");
}

/// Reports that make 127.0.0.0/24 prefer fra1 over ams1.
async fn prefer_fra1(hub: &Hub) {
    let t = tenant(&hub.url(), "beta", &hub.data_dir).await;
    Api::new(hub.url())
        .as_token(&t.key)
        .post("/v1/steering/reports")
        .json(&json!({ "samples": [
            { "spoke": "fra1", "rtt_ms": 5.0 },
            { "spoke": "ams1", "rtt_ms": 60.0 },
        ]}))
        .send()
        .await
        .expect(202);
}

async fn api_answer(server: SocketAddr) -> Vec<IpAddr> {
    addresses(&ask(server, false, "api.ferry.test.", RecordType::A, None).await)
}

#[tokio::test]
async fn a_killed_spoke_leaves_the_answers_within_three_seconds() {
    ferry_tests::install_crypto_provider();
    let hub = dns_hub();
    let mut fra1 = spoke_on(&hub, "fra1", "127.0.0.2");
    let _ams1 = spoke_on(&hub, "ams1", "127.0.0.3");
    until_eligible(&hub, &["fra1", "ams1"]).await;
    prefer_fra1(&hub).await;
    let server = dns(&hub);
    assert_eq!(api_answer(server).await, [ip("127.0.0.2")]);

    fra1.kill();
    let killed = Instant::now();
    let left = eventually(Duration::from_secs(10), async || {
        api_answer(server).await == [ip("127.0.0.3")]
    })
    .await;
    let gone = killed.elapsed();
    assert!(
        left,
        "fra1 was still answered 10 s after it died:\n{}",
        hub.log()
    );
    eprintln!("a killed spoke left the answers after {gone:?}");
    assert!(gone <= Duration::from_secs(3), "it took {gone:?}");
    assert!(metric(&hub.metrics_url(), "ferry_steering_switches_total", &[]).await >= 2.0);

    // A revoked spoke leaves at once; with none left, the hub answers.
    Api::new(hub.url())
        .as_token(ADMIN_TOKEN)
        .delete("/v1/spokes/ams1")
        .send()
        .await
        .expect(204);
    let revoked = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), async || api_answer(server).await
            == [ip("127.0.0.1")])
        .await,
        "a revoked spoke is still answered"
    );
    eprintln!(
        "a revoked spoke left the answers after {:?}",
        revoked.elapsed()
    );
    let gone = ask(server, false, "ams1.ferry.test.", RecordType::A, None).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_draining_spoke_leaves_the_answers_before_it_stops() {
    ferry_tests::install_crypto_provider();
    let hub = dns_hub();
    let mut fra1 = spoke_on(&hub, "fra1", "127.0.0.2");
    let _ams1 = spoke_on(&hub, "ams1", "127.0.0.3");
    until_eligible(&hub, &["fra1", "ams1"]).await;
    prefer_fra1(&hub).await;
    let server = dns(&hub);
    assert_eq!(api_answer(server).await, [ip("127.0.0.2")]);

    // An upload in flight keeps the draining spoke alive until it ends.
    let t = tenant(&hub.url(), "gamma", &hub.data_dir).await;
    let (req, tx) = Api::new(fra1.url())
        .as_token(&t.key)
        .put(&t.file("slow.bin"))
        .body_channel(2 << 20);
    let upload = tokio::spawn(req.send());
    tx.send(bytes::Bytes::from(vec![7u8; 1 << 20]))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&fra1.metrics_url(), "ferry_spoke_active_transfers", &[]).await == 1.0
        })
        .await
    );
    let pid = fra1.daemon().pid().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), async || api_answer(server).await
            == [ip("127.0.0.3")])
        .await,
        "the draining spoke is still answered"
    );
    let admin = Api::new(hub.url()).as_token(ADMIN_TOKEN);
    let state = admin.get("/v1/spokes/fra1").send().await.json();
    assert_eq!(state["steering"], "draining", "{state}");
    assert!(
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success(),
        "the spoke is still running, finishing its upload"
    );
    tx.send(bytes::Bytes::from(vec![8u8; 1 << 20]))
        .await
        .unwrap();
    drop(tx);
    upload.await.unwrap().expect(201);
    let status = fra1.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        fra1.log()
    );
}
