//! Feeds arbitrary bytes to the parsers of JSON that crosses a trust
//! boundary: a provider's or a hub's problem answer, and the bodies spokes
//! send the hub (enrolment, renewal, grant requests, commits, transfers)
//! with their proofs checked. None may panic.
#![no_main]

use ferry_common::contract::{Commit, EnrolRequest, GrantRequest, RenewRequest, Transfer};
use ferry_common::problem::Problem;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for status in [StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE] {
        let p = Problem::from_answer(status, data);
        let _ = p.to_string();
    }
    if let Ok(r) = serde_json::from_slice::<EnrolRequest>(data) {
        let _ = r.verified_key();
    }
    if let Ok(r) = serde_json::from_slice::<RenewRequest>(data) {
        let _ = r.verified_key("fra1");
    }
    let _ = serde_json::from_slice::<GrantRequest>(data);
    let _ = serde_json::from_slice::<Commit>(data);
    let _ = serde_json::from_slice::<Transfer>(data);
});
