//! What operators install: the systemd units and the example socket unit
//! (checked by `systemd-analyze`), and the daemons' side of systemd's
//! protocol (`READY=1` once serving, watchdog pings, `STOPPING=1`, and
//! SIGHUP re-reading the log level).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::tools::Tool;
use ferry_tests::{Hub, HubOptions, Spoke, SpokeOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_units_verify_and_score_2_or_better() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["ferry-hub", "ferry-spoke"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(format!("{unit}.service")))
            .unwrap();
        // verify checks that ExecStart's binary exists: point it at the one
        // just built; everything else is the unit as shipped.
        let built = ferry_tests::hub::binary(unit);
        let local = text.replace(&format!("/usr/bin/{unit}"), built.to_str().unwrap());
        assert_ne!(local, text, "{unit}: ExecStart is /usr/bin/{unit}");
        let path = dir.path().join(format!("{unit}.service"));
        std::fs::write(&path, &local).unwrap();
        verify(&[&path]);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in {report}"));
        assert!(score <= 2.0, "{unit}: exposure {score}\n{report}");
        eprintln!("{unit}: exposure {score}");
        // What the units promise the daemons do.
        for line in [
            "Type=notify",
            "WatchdogSec=",
            "ExecReload=",
            "RestartPreventExitStatus=2",
            "User=",
        ] {
            assert!(local.contains(line), "{unit}: {line}");
        }
    }
    // The example socket units, beside the service they activate, hand
    // the spoke its sockets named as the spoke expects.
    let socket = std::fs::read_to_string(repo().join("systemd/ferry-spoke.socket")).unwrap();
    for line in [
        "FileDescriptorName=api",
        "Service=ferry-spoke.service",
        "ListenStream=",
    ] {
        assert!(socket.contains(line), "ferry-spoke.socket: {line}");
    }
    let path = dir.path().join("ferry-spoke.socket");
    std::fs::write(&path, &socket).unwrap();
    // Its operator socket, which must be passed with it, on loopback.
    let metrics =
        std::fs::read_to_string(repo().join("systemd/ferry-spoke-metrics.socket")).unwrap();
    for line in [
        "FileDescriptorName=metrics",
        "Service=ferry-spoke.service",
        "ListenStream=127.0.0.1:",
    ] {
        assert!(metrics.contains(line), "ferry-spoke-metrics.socket: {line}");
    }
    let metrics_path = dir.path().join("ferry-spoke-metrics.socket");
    std::fs::write(&metrics_path, &metrics).unwrap();
    verify(&[
        &path,
        &metrics_path,
        &dir.path().join("ferry-spoke.service"),
    ]);
}

/// `systemd-analyze verify` passes `units` without a word.
fn verify(units: &[&Path]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{units:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the daemons are started with for these tests: a short watchdog
/// interval (the harness gives them a notification socket of its own).
fn watchdog_env() -> Vec<(String, String)> {
    vec![("WATCHDOG_USEC".into(), "400000".into())]
}

#[tokio::test]
async fn the_hub_tells_systemd_it_is_ready_pings_the_watchdog_and_reloads_on_sighup() {
    ferry_tests::install_crypto_provider();
    let mut hub = Hub::start_with(HubOptions {
        env: watchdog_env(),
        log_level: Some("info".into()),
        ..HubOptions::default()
    });
    let notify = hub.notifications();
    assert_eq!(notify.next(), "READY=1", "READY comes first, once serving");
    let pings = notify.until("WATCHDOG=1");
    assert_eq!(pings, 0);
    // SIGHUP with a new log level: RELOADING, READY, and debug lines.
    let text = std::fs::read_to_string(&hub.config).unwrap();
    // A 4 KiB JSON body is taken (and refused for its content) before;
    // after a reload to a 1 KiB limit, it is too large.
    let admin = ferry_tests::Api::new(hub.url()).as_token(ferry_tests::hub::ADMIN_TOKEN);
    let big = serde_json::json!({ "name": "x".repeat(4096) });
    let before = admin.post("/v1/accounts").json(&big).send().await;
    assert_ne!(before.status, 413, "{:?}", before.body);
    let changed = text
        .replace("level = \"info\"", "level = \"debug\"")
        .replacen("[api]\n", "[api]\nmax_json_body_bytes = 1024\n", 1);
    assert_ne!(changed, text);
    std::fs::write(&hub.config, changed).unwrap();
    let pid = hub.daemon().pid().expect("the hub runs");
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    notify.until("RELOADING=1");
    notify.until("READY=1");
    assert!(
        ferry_tests::eventually(Duration::from_secs(5), async || hub
            .log()
            .contains("reload: log level set"))
        .await,
        "{}",
        hub.log()
    );
    let after = admin.post("/v1/accounts").json(&big).send().await;
    assert_eq!(after.status, 413, "{:?}", after.body);
    // A broken file changes nothing.
    std::fs::write(&hub.config, "not = [toml").unwrap();
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    notify.until("READY=1");
    assert!(
        ferry_tests::eventually(Duration::from_secs(5), async || hub
            .log()
            .contains("the configuration does not load; nothing changed"))
        .await
    );
    std::fs::write(&hub.config, text).unwrap();
    hub.stop();
    hub.notifications().until("STOPPING=1");
}

#[tokio::test]
async fn a_spoke_is_ready_once_its_first_tunnel_is_up() {
    ferry_tests::install_crypto_provider();
    let hub = Hub::start();
    let token = hub.spoke_token("fra1", None);
    let spoke = Spoke::start_with(
        &hub,
        "fra1",
        &token,
        &SpokeOptions {
            env: watchdog_env(),
            ..SpokeOptions::default()
        },
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let notify = spoke.notifications();
    // (Watchdog pings may come first: the watchdog runs from the start.)
    notify.until("READY=1");
    let ready = ferry_tests::Api::new(spoke.url())
        .get("/readyz")
        .send()
        .await;
    assert_eq!(ready.status, 200, "READY came before a tunnel was up");
    notify.until("WATCHDOG=1");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_packages_hold_binary_unit_configs_and_make_the_user() {
    let out = tempfile::tempdir().unwrap();
    // The debug binaries the suite built, packaged as a release would be.
    let built = run(Command::new(repo().join("scripts/build-deb.sh"))
        .args([
            "--profile",
            "debug",
            "--no-build",
            "--compress",
            "none",
            "--out",
        ])
        .arg(out.path()));
    let debs: Vec<PathBuf> = built.lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 3, "{built}");
    // The client's package: the command and its documentation, nothing to
    // run as a service.
    let client = &debs[2];
    let field = |f: &str| {
        run(Command::new("dpkg-deb")
            .args(["--field"])
            .arg(client)
            .arg(f))
        .trim()
        .to_owned()
    };
    assert_eq!(field("Package"), "ferry");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(client));
    for path in [
        "./usr/bin/ferry",
        "./usr/share/doc/ferry/client.md",
        "./usr/share/bash-completion/completions/ferry",
        "./usr/share/zsh/vendor-completions/_ferry",
        "./usr/share/fish/vendor_completions.d/ferry.fish",
        "./usr/share/man/man1/ferry.1.gz",
        "./usr/share/man/man1/ferry-cp.1.gz",
        "./usr/share/man/man1/ferry-sync.1.gz",
    ] {
        assert!(contents.contains(path), "no {path} in\n{contents}");
    }
    assert!(!contents.contains("systemd"), "{contents}");
    let root = out.path().join("ferry");
    run(Command::new("dpkg-deb").arg("-x").arg(client).arg(&root));
    // The completion script is bash that defines the completion.
    let completion = root.join("usr/share/bash-completion/completions/ferry");
    let defined = run(Command::new("bash")
        .arg("-c")
        .arg("source \"$0\" && complete -p ferry")
        .arg(&completion));
    assert!(defined.contains("ferry"), "{defined}");
    let version = run(Command::new(root.join("usr/bin/ferry")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("ferry {}", env!("CARGO_PKG_VERSION"))
    );
    for (deb, name, user, configs) in [
        (
            &debs[0],
            "ferry-hub",
            "ferry",
            &["hub.example.toml", "hub-region.example.toml"][..],
        ),
        (
            &debs[1],
            "ferry-spoke",
            "ferry-spoke",
            &["spoke.example.toml"][..],
        ),
    ] {
        let field = |f: &str| {
            run(Command::new("dpkg-deb").args(["--field"]).arg(deb).arg(f))
                .trim()
                .to_owned()
        };
        assert_eq!(field("Package"), name);
        assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
        assert!(field("Depends").contains("adduser"));
        let contents = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
        let unit = format!("./lib/systemd/system/{name}.service");
        for path in [
            format!("./usr/bin/{name}"),
            unit.clone(),
            format!("./usr/share/doc/{name}/operations.md"),
        ] {
            assert!(contents.contains(&path), "{name}: no {path} in\n{contents}");
        }
        // Unpacked: the binary runs and accepts the configurations it ships.
        let root = out.path().join(name);
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        let control = out.path().join(format!("{name}.control"));
        run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
        let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
        for cfg in configs {
            assert!(
                conffiles.lines().any(|l| l == format!("/etc/ferry/{cfg}")),
                "{conffiles}"
            );
            run(Command::new(root.join("usr/bin").join(name))
                .arg("--check-config")
                .arg(root.join("etc/ferry").join(cfg)));
        }
        assert_eq!(
            std::fs::read_to_string(root.join(unit.trim_start_matches("./"))).unwrap(),
            std::fs::read_to_string(repo().join("systemd").join(format!("{name}.service")))
                .unwrap()
        );
        // postinst, with stand-ins for the system's tools: it makes the
        // system user when missing, enables the unit, and does not start
        // it without a configuration.
        let bin = out.path().join(format!("{name}.bin"));
        std::fs::create_dir_all(&bin).unwrap();
        let calls = out.path().join(format!("{name}.calls"));
        for tool in ["adduser", "deb-systemd-helper", "systemctl"] {
            let script = format!("#!/bin/sh\necho \"{tool} $*\" >> {}\n", calls.display());
            std::fs::write(bin.join(tool), script).unwrap();
        }
        std::fs::write(bin.join("getent"), "#!/bin/sh\nexit 2\n").unwrap();
        for tool in ["adduser", "deb-systemd-helper", "systemctl", "getent"] {
            run(Command::new("chmod").arg("+x").arg(bin.join(tool)));
        }
        let path = format!("{}:/usr/bin:/bin", bin.display());
        run(Command::new("sh")
            .arg(control.join("postinst"))
            .arg("configure")
            .env("PATH", &path));
        let log = std::fs::read_to_string(&calls).unwrap();
        assert!(
            log.contains("adduser --system --group") && log.contains(&format!(" {user}\n")),
            "{log}"
        );
        assert!(
            log.contains(&format!("deb-systemd-helper enable {name}.service")),
            "{log}"
        );
        for script in ["prerm", "postrm"] {
            run(Command::new("sh").arg("-n").arg(control.join(script)));
        }
    }
}

#[test]
fn the_terraform_parses_passes_checkov_and_its_ferry_configs_check() {
    let tf = repo().join("terraform");
    // python-hcl2 parses every file; what it read comes back as JSON.
    let facts: serde_json::Value = serde_json::from_str(&run(Command::new(Tool::Python.path())
        .arg(repo().join("tests/scripts/terraform_facts.py"))
        .arg(&tf)))
    .unwrap();
    let files = facts["files"].as_array().unwrap();
    for module in ["region-network", "hub", "spoke-fleet", "dns"] {
        for part in ["main.tf", "variables.tf", "outputs.tf", "versions.tf"] {
            let want = format!("modules/{module}/{part}");
            assert!(files.iter().any(|f| f == want.as_str()), "missing {want}");
        }
    }
    for v in facts["variables"].as_array().unwrap() {
        assert!(
            !v["description"].as_str().unwrap().is_empty()
                && !v["type"].as_str().unwrap().is_empty(),
            "variable without description or type: {v}"
        );
    }
    for o in facts["outputs"].as_array().unwrap() {
        assert!(
            !o["description"].as_str().unwrap().is_empty(),
            "output without description: {o}"
        );
    }
    // Every skip of a checkov check says why.
    let skips = facts["skips"].as_array().unwrap();
    for s in skips {
        assert!(
            s["reason"].as_str().unwrap().len() > 10,
            "a skip without a reason: {s}"
        );
    }
    // checkov, offline: no failed check.
    let out = Command::new(Tool::Checkov.path())
        .args(["-d"])
        .arg(&tf)
        .args([
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--skip-download",
            "--output",
            "json",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov output: {e}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let summary = &report["summary"];
    assert_eq!(
        summary["failed"],
        0,
        "{}",
        serde_json::to_string_pretty(&report["results"]["failed_checks"]).unwrap()
    );
    assert!(summary["passed"].as_u64().unwrap() > 100, "{summary}");
    assert!(out.status.success());
    // The example's ferry configurations, as the instances will write them,
    // pass this ferry's own check.
    let modules = &facts["modules"];
    let fill = |text: &str| {
        text.replace("${local.zone}", "edge.example.com")
            .replace("${var.domain}", "example.com")
            .replace("${module.hub_fra.public_ip}", "203.0.113.7")
            .replace("@PUBLIC_IP@", "203.0.113.7")
            .replace("@NAME@", "iad-0a1b2c3d4e5f")
    };
    let dir = tempfile::tempdir().unwrap();
    for (binary, text) in [
        (
            "ferry-hub",
            modules["hub_fra"]["config_toml"].as_str().unwrap(),
        ),
        (
            "ferry-spoke",
            modules["locals"]["spoke_config"].as_str().unwrap(),
        ),
    ] {
        let path = dir.path().join(format!("{binary}.toml"));
        std::fs::write(&path, fill(text)).unwrap();
        run(Command::new(ferry_tests::hub::binary(binary))
            .arg("--check-config")
            .arg(&path));
    }
}
