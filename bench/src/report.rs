//! Tables for the terminal, medians, and charts drawn by gnuplot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// A titled table with aligned columns.
#[derive(Debug)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i == 0 {
                    let _ = write!(s, "{c:<w$}");
                } else {
                    let _ = write!(s, "  {c:>w$}");
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = format!("\n{}\n", self.title);
        out.push_str(&line(&self.headers));
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A number with `digits` decimals.
/// `ratios` as a median with its spread: `0.85 (0.80–0.91)`.
pub fn median_spread(ratios: &[f64]) -> String {
    format!("{} ({})", fmt(median(ratios), 2), spread(ratios, 2))
}

/// The least and the greatest of `values` as `min–max` with `digits`
/// decimals, the spread printed beside a median; `-` for none.
pub fn spread(values: &[f64], digits: usize) -> String {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo.is_finite() {
        format!("{lo:.digits$}–{hi:.digits$}")
    } else {
        "-".into()
    }
}

pub fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

/// Draws the concurrency sweep (throughput, and the spoke's peak RSS,
/// against concurrency) with gnuplot; returns the files written.
pub fn charts(json: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Some(points) = json["sweep"]["points"].as_array() else {
        bail!("the sweep did not run");
    };
    let mut data = String::from("# concurrency spoke_MBps nginx_MBps spoke_peak_rss_MiB\n");
    for p in points {
        let _ = writeln!(
            data,
            "{} {} {} {}",
            p["concurrency"],
            p["spoke_mbps"].as_f64().unwrap_or(f64::NAN),
            p["nginx_mbps"].as_f64().unwrap_or(f64::NAN),
            p["spoke_peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / 1048576.0
        );
    }
    let data_path = out.join("sweep.dat");
    std::fs::write(&data_path, data)?;
    let file_mib = json["sweep"]["file_bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
    let throughput = out.join("throughput.png");
    let rss = out.join("spoke-rss.png");
    let script = format!(
        "set terminal pngcairo size 800,480 noenhanced\n\
         set grid\nset logscale x 2\nset key bottom left\n\
         set xlabel 'concurrent downloads of a {file_mib} MiB file'\n\
         set output '{throughput}'\nset title 'Aggregate download throughput on loopback'\n\
         set ylabel 'MB/s'\nset yrange [0:*]\n\
         plot '{data}' using 1:2 with linespoints lw 2 title 'through a ferry spoke', \
              '{data}' using 1:3 with linespoints lw 2 title 'through nginx (tuned proxy)'\n\
         set output '{rss}'\nset title 'Peak resident memory of the spoke'\n\
         set ylabel 'MiB'\nset yrange [0:*]\n\
         plot '{data}' using 1:4 with linespoints lw 2 title 'ferry-spoke peak RSS'\n",
        throughput = throughput.display(),
        rss = rss.display(),
        data = data_path.display(),
    );
    let script_path = out.join("sweep.gp");
    std::fs::write(&script_path, script)?;
    let status = std::process::Command::new("gnuplot")
        .arg(&script_path)
        .status()
        .context("cannot run gnuplot (install Debian's gnuplot-nox)")?;
    if !status.success() {
        bail!("gnuplot failed ({status})");
    }
    Ok(vec![throughput, rss])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn spreads() {
        assert_eq!(spread(&[0.91, 1.2, f64::NAN, 0.87], 2), "0.87–1.20");
        assert_eq!(spread(&[], 2), "-");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new("T", &["path", "MB/s"]);
        t.row(vec!["direct".into(), "1000.0".into()]);
        t.row(vec!["spoke".into(), "95.5".into()]);
        let text = t.render();
        assert!(text.contains("direct  1000.0\n"));
        assert!(text.contains("spoke     95.5\n"));
    }
}
