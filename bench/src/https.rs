//! Scenario 14: HTTPS at the front. The spoke serving its API over TLS
//! (rustls with ring) against nginx terminating TLS in front of the
//! folder's origin, both with one ECDSA P-256 certificate and the client
//! held to TLS 1.3 with AES-128-GCM, so both servers do the same
//! cryptography. The baseline is the origin itself over plain HTTP.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use ferry_tests::spoke::{Spoke, SpokeOptions};
use serde_json::{Value, json};

use crate::Plan;
use crate::client::{self, Target};
use crate::nginx::Nginx;
use crate::report::median_spread;
use crate::rig::{ALL_FROM_LOOPBACK, Rig, Via};
use crate::scenarios::{Sample, Series, in_rotation, timed_on, up_down_table};

/// A client configuration trusting `cert` only, with TLS 1.3 and
/// AES-128-GCM alone.
fn client_config(cert: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert.to_vec()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub async fn https(rig: &Rig, plan: &Plan, block: &Bytes) -> anyhow::Result<(String, Value)> {
    let size = plan.transfer;
    let dir = tempfile::tempdir()?;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let spoke = Spoke::start_with(
        &rig.hub,
        "bench-tls",
        &rig.hub.spoke_token("bench-tls", None),
        &SpokeOptions {
            log_level: Some("warn,ferry_spoke=info".into()),
            default_timings: true,
            api_extra: ALL_FROM_LOOPBACK.into(),
            api_tls: Some((cert.clone(), key.clone())),
            ..SpokeOptions::default()
        },
    )
    .map_err(|log| anyhow::anyhow!("the HTTPS spoke did not start:\n{log}"))?;
    let nginx = Nginx::tls_proxy(rig.origin.addr, &cert, &key)?;
    let config = client_config(certified.cert.der())?;
    client::use_tls(spoke.addr, config.clone());
    client::use_tls(nginx.addr, config);

    let spoke_pid = spoke.daemon().pid().context("the HTTPS spoke runs")?;
    let pids = [
        vec![rig.pid(Via::Direct)],
        vec![spoke_pid, rig.pid(Via::Hub)],
        vec![nginx.pid(), rig.pid(Via::Direct)],
    ];
    let target = |i: usize, file: &str| match i {
        0 => Target {
            addr: rig.origin.addr,
            path: format!("/{file}"),
            token: None,
        },
        1 => Target {
            addr: spoke.addr,
            path: format!("/v1/connections/local/files/{file}"),
            token: Some(rig.tenant.key.clone()),
        },
        _ => Target {
            addr: nginx.addr,
            path: format!("/{file}"),
            token: None,
        },
    };
    let file = "bench/https.bin";
    rig.seed(rig.file(Via::Hub, file), size, block).await?;
    // One untimed transfer each way on each path: the first of a series
    // is slower (connections, grants, caches).
    for i in 0..3 {
        client::download(&target(i, file)).await?;
        client::upload(
            &target(i, &format!("bench/https-up-{i}.bin")),
            size,
            block.clone(),
            &[],
        )
        .await?;
    }
    let (mut down, mut up): ([Series; 3], [Series; 3]) = Default::default();
    let (mut down_vs_nginx, mut up_vs_nginx) = (Vec::new(), Vec::new());
    for run in 0..plan.runs {
        let d: Vec<Sample> = in_rotation(&[0usize, 1, 2], run, async |i| {
            timed_on(&pids[i], size, async {
                let n = client::download(&target(i, file)).await?;
                ensure!(n == size, "path {i} sent {n} of {size} bytes");
                Ok(())
            })
            .await
        })
        .await?;
        let u: Vec<Sample> = in_rotation(&[0usize, 1, 2], run, async |i| {
            let to = target(i, &format!("bench/https-up-{i}.bin"));
            timed_on(&pids[i], size, async {
                client::upload(&to, size, block.clone(), &[]).await?;
                Ok(())
            })
            .await
        })
        .await?;
        for i in 0..3 {
            down[i].push(d[i], (i > 0).then_some(d[0]));
            up[i].push(u[i], (i > 0).then_some(u[0]));
        }
        down_vs_nginx.push(d[1].mbps / d[2].mbps);
        up_vs_nginx.push(u[1].mbps / u[2].mbps);
        eprintln!("https: run {} of {} done", run + 1, plan.runs);
    }
    let t = up_down_table(
        format!(
            "14. HTTPS at the front: {} MiB (MB/s; ratio to the origin over plain HTTP, pair by pair; TLS 1.3, AES-128-GCM, ECDSA P-256 on both)",
            size / 1048576
        ),
        &["origin, plain HTTP", "spoke, HTTPS", "nginx HTTPS proxy"],
        &up,
        &down,
    );
    let text = format!(
        "{}spoke ÷ nginx, run by run: download {}, upload {}\n",
        t.render(),
        median_spread(&down_vs_nginx),
        median_spread(&up_vs_nginx),
    );
    let json = json!({
        "bytes": size,
        "download": { "origin": down[0].json(), "spoke": down[1].json(), "nginx": down[2].json() },
        "upload": { "origin": up[0].json(), "spoke": up[1].json(), "nginx": up[2].json() },
        "spoke_vs_nginx": { "download": down_vs_nginx, "upload": up_vs_nginx },
    });
    Ok((text, json))
}
