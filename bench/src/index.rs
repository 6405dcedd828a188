//! Scenario 11: control requests answered from the metadata index — a
//! 1 KiB file's GET and listings of 10 and 1,000 entries, at the hub and
//! through the spoke — beside nginx serving the same 1 KiB file from the
//! provider folder, with the same closed-loop client in the same run.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::Plan;
use crate::client::{self, Target};
use crate::report::{Table, fmt, median};
use crate::rig::{Rig, Via};

/// One kind of request, through one path.
struct Row {
    what: &'static str,
    via: Via,
    target: Target,
}

pub async fn index(rig: &Rig, plan: &Plan) -> anyhow::Result<(String, Value)> {
    let small = Bytes::from(vec![b'i'; 1024]);
    rig.seed(rig.file(Via::Hub, "idx/one.txt"), 1024, &small)
        .await?;
    for i in 0..10 {
        rig.seed(
            rig.file(Via::Hub, &format!("idx/ten/f{i:02}.txt")),
            16,
            &small,
        )
        .await?;
    }
    let thousand = if plan.quick { 100 } else { 1000 };
    for i in 0..thousand {
        rig.seed(
            rig.file(Via::Hub, &format!("idx/big/f{i:04}.txt")),
            16,
            &small,
        )
        .await?;
    }
    let listing = |via: Via, dir: &str| Target {
        path: format!("/v1/connections/local/list/idx/{dir}?limit=1000"),
        ..rig.file(via, "x")
    };
    let rows = [
        Row {
            what: "nginx: static 1 KiB file",
            via: Via::Direct,
            target: rig.file(Via::Direct, "idx/one.txt"),
        },
        Row {
            what: "GET 1 KiB file",
            via: Via::Hub,
            target: rig.file(Via::Hub, "idx/one.txt"),
        },
        Row {
            what: "GET 1 KiB file",
            via: Via::Spoke,
            target: rig.file(Via::Spoke, "idx/one.txt"),
        },
        Row {
            what: "listing, 10 entries",
            via: Via::Hub,
            target: listing(Via::Hub, "ten"),
        },
        Row {
            what: "listing, 10 entries",
            via: Via::Spoke,
            target: listing(Via::Spoke, "ten"),
        },
        Row {
            what: "listing, 1,000 entries",
            via: Via::Hub,
            target: listing(Via::Hub, "big"),
        },
        Row {
            what: "listing, 1,000 entries",
            via: Via::Spoke,
            target: listing(Via::Spoke, "big"),
        },
    ];
    let n = rows.len();
    let (mut rps, mut p50, mut p99) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for run in 0..plan.runs {
        // In rotation, so no row always runs first.
        for k in 0..n {
            let i = (run + k) % n;
            let r = client::closed_loop(
                &rows[i].target,
                plan.control_conns,
                plan.control_time,
                plan.control_max,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{} via {}: {e}", rows[i].what, rows[i].via.name()))?;
            rps[i].push(r.rps);
            p50[i].push(r.p50_ms);
            p99[i].push(r.p99_ms);
        }
    }
    let nginx = median(&rps[0]);
    let mut t = Table::new(
        format!(
            "11. Control requests from the metadata index: {} connections, closed loop, {:.1} s per run",
            plan.control_conns,
            plan.control_time.as_secs_f64()
        ),
        &[
            "request",
            "via",
            "req/s",
            "÷ nginx static",
            "÷ same at hub",
            "p50 ms",
            "p99 ms",
            "p99 added ms",
        ],
    );
    let mut figures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // The same request at the hub: the row before a spoke's.
        let at_hub = (row.via == Via::Spoke).then(|| i - 1);
        let vs_hub = at_hub.map(|h| median(&rps[i]) / median(&rps[h]));
        let added = at_hub.map(|h| median(&p99[i]) - median(&p99[h]));
        t.row(vec![
            row.what.into(),
            row.via.name().into(),
            fmt(median(&rps[i]), 0),
            fmt(median(&rps[i]) / nginx, 2),
            vs_hub.map_or("—".into(), |v| fmt(v, 2)),
            fmt(median(&p50[i]), 2),
            fmt(median(&p99[i]), 2),
            added.map_or("—".into(), |v| fmt(v, 2)),
        ]);
        figures.push(json!({
            "request": row.what,
            "via": row.via.name(),
            "rps": median(&rps[i]),
            "runs_rps": rps[i],
            "ratio_to_nginx_static": median(&rps[i]) / nginx,
            "ratio_to_hub": vs_hub,
            "p50_ms": median(&p50[i]),
            "p99_ms": median(&p99[i]),
            "p99_added_ms": added,
        }));
    }
    Ok((
        t.render(),
        json!({ "connections": plan.control_conns, "seconds": plan.control_time.as_secs_f64(), "large_listing_entries": thousand, "rows": figures }),
    ))
}
