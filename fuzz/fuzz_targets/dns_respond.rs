//! Feeds arbitrary bytes to the steering DNS server's entry point, as UDP
//! and as TCP: it must never panic, and whatever it sends back must parse as
//! a response to the same id that fits the UDP limit.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_hub::config::SteeringConfig;
use ferry_hub::dns::answer::{EDNS_PAYLOAD, Responder};
use ferry_hub::dns::zone::Zone;
use ferry_hub::dns::metrics::{DnsMetrics, Transport};
use ferry_hub::steering::Steering;
use ferry_hub::steering::metrics::SteeringMetrics;
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fn responder() -> &'static Responder {
    static R: OnceLock<Responder> = OnceLock::new();
    R.get_or_init(|| {
        let mut registry = prometheus_client::registry::Registry::default();
        let steering_metrics = SteeringMetrics::register(&mut registry);
        let hub = steering_metrics.answers("hub");
        let steering = Arc::new(Steering::new(
            &SteeringConfig::default(),
            Duration::from_secs(3),
            steering_metrics,
        ));
        let zone = Zone::new(
            "edge.example.com",
            &[],
            None,
            20,
            &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            1,
        )
        .unwrap();
        Responder::new(zone, steering, DnsMetrics::register(&mut registry), hub)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for transport in [Transport::udp, Transport::tcp] {
        if responder().respond(data, "198.51.100.1".parse().unwrap(), transport, None, &mut out) {
            let back = Message::from_vec(&out).expect("what is sent parses");
            assert_eq!(back.metadata.message_type, MessageType::Response);
            assert_eq!(&out[..2], &data[..2]);
            if transport == Transport::udp {
                assert!(out.len() <= usize::from(EDNS_PAYLOAD));
            }
        }
    }
});
