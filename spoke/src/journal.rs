//! The report journal: every completion report is appended to a file in
//! the spoke's state directory, and synced, before the client is answered;
//! a report the hub has taken is marked done. On start the reports not
//! marked are read back and delivered, so a spoke that crashes with
//! reports the hub has not taken loses none of them. The hub records each
//! report's id with what it applies, so one delivered twice (taken, then
//! the spoke crashed before its mark reached the disk) is applied once.
//!
//! The file is a line of JSON per entry: `{"id", "report"}` for a report,
//! `{"done": id}` for its mark. It is rewritten with only the reports
//! still waiting when those marks make up most of it, and emptied when
//! nothing waits.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::reports::Report;

/// The journal's file in the state directory.
pub const FILE: &str = "reports.journal";

/// A journal file at most this large is never rewritten: emptying it
/// when nothing waits is enough.
const REWRITE_ABOVE: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Report { id: String, report: Stored },
    Done { done: String },
}

/// A report as the journal keeps it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    Commit {
        commit: Box<ferry_common::contract::Commit>,
        grant: String,
    },
    Transfer {
        transfer: ferry_common::contract::Transfer,
        grant: String,
    },
}

impl From<&Report> for Stored {
    fn from(r: &Report) -> Self {
        match r {
            Report::Commit(c, g) => Self::Commit {
                commit: c.clone(),
                grant: g.to_string(),
            },
            Report::Transfer(t, g) => Self::Transfer {
                transfer: t.clone(),
                grant: g.to_string(),
            },
        }
    }
}

impl From<Stored> for Report {
    fn from(s: Stored) -> Self {
        match s {
            Stored::Commit { commit, grant } => Self::Commit(commit, grant.into()),
            Stored::Transfer { transfer, grant } => Self::Transfer(transfer, grant.into()),
        }
    }
}

#[derive(Debug)]
struct Inner {
    file: std::fs::File,
    /// The file's length.
    bytes: u64,
    /// The reports not marked done, by id, with their line's length.
    waiting: BTreeMap<String, u64>,
    /// The bytes of the lines of `waiting`.
    waiting_bytes: u64,
    /// How many reports were written (the number of the last one).
    written: u64,
}

/// The journal of one spoke.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Above this many bytes of waiting reports the spoke takes no new
    /// uploads.
    limit: u64,
    inner: Mutex<Inner>,
    /// The number of the last report known synced; held while syncing, so
    /// that appends waiting meanwhile find theirs synced by the same call
    /// (a group commit: many uploads' reports share one sync).
    synced: Mutex<u64>,
}

impl Journal {
    /// Opens (making it if needed) the journal in `dir`; returns it with
    /// the reports that were waiting, oldest first. A torn last line (a
    /// crash in the middle of an append, before its sync returned) is
    /// dropped: its report was never acknowledged.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<(Self, Vec<(String, Report)>)> {
        let path = dir.join(FILE);
        let mut pending: Vec<(String, Report)> = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut done = std::collections::HashSet::new();
                let mut reports = Vec::new();
                let mut unreadable = Vec::new();
                // A last line without its newline is an append a crash cut
                // short, never acknowledged; any other line that does not
                // read is kept aside, not dropped.
                let complete = bytes.ends_with(b"\n");
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let last = lines.len().saturating_sub(1);
                for (i, line) in lines.into_iter().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    match serde_json::from_slice::<Line>(line) {
                        Ok(Line::Report { id, report }) => reports.push((id, report.into())),
                        Ok(Line::Done { done: id }) => {
                            done.insert(id);
                        }
                        Err(_) if i == last && !complete => {
                            tracing::warn!(
                                "dropped the report journal's last line, cut short by a crash before it was acknowledged"
                            );
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a line of the report journal does not read; it is kept in reports.journal.unreadable");
                            unreadable.extend_from_slice(line);
                            unreadable.push(b'\n');
                        }
                    }
                }
                if !unreadable.is_empty() {
                    let aside = dir.join(format!("{FILE}.unreadable"));
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&aside)?;
                    f.write_all(&unreadable)?;
                    f.sync_all()?;
                }
                pending = reports
                    .into_iter()
                    .filter(|(id, _)| !done.contains(id))
                    .collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Start from a file holding exactly what waits.
        let mut text = Vec::new();
        let mut waiting = BTreeMap::new();
        for (id, report) in &pending {
            let line = line_of(&Line::Report {
                id: id.clone(),
                report: report.into(),
            });
            waiting.insert(id.clone(), line.len() as u64);
            text.extend_from_slice(&line);
        }
        let waiting_bytes = text.len() as u64;
        write_whole(&path, &text)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok((
            Self {
                path,
                limit,
                inner: Mutex::new(Inner {
                    file,
                    bytes: waiting_bytes,
                    waiting,
                    waiting_bytes,
                    written: 0,
                }),
                synced: Mutex::new(0),
            },
            pending,
        ))
    }

    /// Appends `report` under `id` and syncs it to disk (with whatever
    /// other appends wrote meanwhile: one sync for all). A write that fails
    /// half-way is cut off again (so that a later line does not run on
    /// from a torn one) and the error returned: the report is not in the
    /// journal. A sync that fails returns its error too; the line stays
    /// (replayed after a restart if it reached the disk after all; the
    /// hub applies a report once).
    pub fn append(&self, id: &str, report: &Report) -> std::io::Result<()> {
        let line = line_of(&Line::Report {
            id: id.to_owned(),
            report: report.into(),
        });
        let mine = {
            let mut inner = self.inner.lock().expect("journal poisoned");
            if let Err(e) = inner.file.write_all(&line) {
                let _ = inner.file.set_len(inner.bytes);
                return Err(e);
            }
            inner.bytes += line.len() as u64;
            inner.waiting.insert(id.to_owned(), line.len() as u64);
            inner.waiting_bytes += line.len() as u64;
            inner.written += 1;
            inner.written
        };
        let mut synced = self.synced.lock().expect("journal poisoned");
        if *synced >= mine {
            return Ok(());
        }
        // The file as it is now (a rewrite may have replaced it: what it
        // holds was synced whole, this report included).
        let (file, through) = {
            let inner = self.inner.lock().expect("journal poisoned");
            (inner.file.try_clone()?, inner.written)
        };
        file.sync_data()?;
        *synced = through;
        Ok(())
    }

    /// Marks report `id` delivered (or refused for good). Not synced: a
    /// mark lost in a crash only sends the report again, and the hub
    /// applies it once.
    pub fn done(&self, id: &str) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("journal poisoned");
        let Some(len) = inner.waiting.remove(id) else {
            return Ok(());
        };
        inner.waiting_bytes -= len;
        if inner.waiting.is_empty() {
            // Nothing waits: the file can be empty.
            inner.file.set_len(0)?;
            inner.bytes = 0;
            return Ok(());
        }
        let line = line_of(&Line::Done {
            done: id.to_owned(),
        });
        inner.file.write_all(&line)?;
        inner.bytes += line.len() as u64;
        if inner.bytes > REWRITE_ABOVE && inner.bytes > 2 * inner.waiting_bytes {
            self.rewrite(&mut inner)?;
        }
        Ok(())
    }

    /// Rewrites the file with only the reports still waiting (kept in the
    /// order of the file), then goes on appending to it.
    fn rewrite(&self, inner: &mut Inner) -> std::io::Result<()> {
        let old = std::fs::read(&self.path)?;
        let mut text = Vec::with_capacity(inner.waiting_bytes as usize);
        for line in old.split(|b| *b == b'\n') {
            if let Ok(Line::Report { id, .. }) = serde_json::from_slice::<Line>(line)
                && inner.waiting.contains_key(&id)
            {
                text.extend_from_slice(line);
                text.push(b'\n');
            }
        }
        write_whole(&self.path, &text)?;
        inner.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        inner.bytes = text.len() as u64;
        Ok(())
    }

    /// The bytes of reports that wait.
    pub fn waiting_bytes(&self) -> u64 {
        self.inner.lock().expect("journal poisoned").waiting_bytes
    }

    /// The limit above which no new upload is taken.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a new upload may begin: the reports waiting are under the
    /// limit.
    pub fn has_room(&self) -> bool {
        self.waiting_bytes() < self.limit
    }
}

fn line_of(line: &Line) -> Vec<u8> {
    let mut text = serde_json::to_vec(line).expect("reports serialise");
    text.push(b'\n');
    text
}

/// Writes `path` whole, readable by the spoke's user only (it holds grant
/// tokens), replaced in one step and synced with its folder.
fn write_whole(path: &Path, text: &[u8]) -> std::io::Result<()> {
    ferry_common::private_file::write(path, text).map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::content::model::Direction;
    use ferry_common::contract::Transfer;

    fn report(i: usize) -> Report {
        Report::Transfer(
            Transfer::start(
                "acc_1",
                "con_1",
                &format!("f{i}"),
                Direction::Download,
                "s1",
            ),
            format!("grant{i}").into(),
        )
    }

    /// A journal in a new folder holding report `r0`, then `bytes` as
    /// written by something else (a crash, another release).
    fn one_report_then(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        j.append("r0", &report(0)).unwrap();
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(bytes)
            .unwrap();
        dir
    }

    fn paths(reports: &[(String, Report)]) -> Vec<String> {
        reports
            .iter()
            .map(|(id, r)| match r {
                Report::Transfer(t, g) => format!("{id}:{}:{g}", t.path),
                Report::Commit(..) => format!("{id}:commit"),
            })
            .collect()
    }

    #[test]
    fn what_was_not_marked_done_comes_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (j, pending) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert!(pending.is_empty());
        for i in 0..5 {
            j.append(&format!("r{i}"), &report(i)).unwrap();
        }
        j.done("r1").unwrap();
        j.done("r3").unwrap();
        j.done("never-written").unwrap();
        drop(j);
        let (j, pending) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            paths(&pending),
            ["r0:f0:grant0", "r2:f2:grant2", "r4:f4:grant4"]
        );
        // Opening rewrote the file with only those.
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(j.waiting_bytes(), text.len() as u64);
        // All done: the file is empty.
        for id in ["r0", "r2", "r4"] {
            j.done(id).unwrap();
        }
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), 0);
        assert_eq!(j.waiting_bytes(), 0);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_rest_kept() {
        let dir = one_report_then(br#"{"id":"r1","report":{"transf"#);
        let (_, pending) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(paths(&pending), ["r0:f0:grant0"]);
    }

    #[test]
    fn appends_from_many_threads_share_syncs_and_all_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), 1 << 30).unwrap();
        let j = std::sync::Arc::new(j);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        j.append(&format!("t{t}-{i:03}"), &report(i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*j.synced.lock().unwrap(), 800);
        drop(j);
        let (_, pending) = Journal::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(pending.len(), 800);
        // Each thread's reports in the order it wrote them.
        for t in 0..8 {
            let mine: Vec<&str> = pending
                .iter()
                .map(|(id, _)| id.as_str())
                .filter(|id| id.starts_with(&format!("t{t}-")))
                .collect();
            let mut sorted = mine.clone();
            sorted.sort_unstable();
            assert_eq!(mine, sorted);
        }
    }

    #[test]
    fn an_unreadable_line_in_the_middle_is_kept_aside_not_dropped() {
        let dir = one_report_then(b"{\"id\":\"r1\",\"report\":{\"from-a-newer-release\":1}}\n");
        let (j, _) = Journal::open(dir.path(), 1 << 20).unwrap();
        j.append("r2", &report(2)).unwrap();
        drop(j);
        let (_, pending) = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(paths(&pending), ["r0:f0:grant0", "r2:f2:grant2"]);
        let aside = std::fs::read_to_string(dir.path().join(format!("{FILE}.unreadable"))).unwrap();
        assert!(aside.contains("from-a-newer-release"), "{aside}");
    }

    #[test]
    fn marks_are_folded_away_and_a_full_journal_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let one = line_of(&Line::Report {
            id: "r00000".into(),
            report: (&report(0)).into(),
        })
        .len() as u64;
        // Room for three waiting reports.
        let (j, _) = Journal::open(dir.path(), 3 * one).unwrap();
        j.append("keep00", &report(0)).unwrap();
        for i in 0..3 {
            assert!(j.has_room());
            j.append(&format!("r{i:05}"), &report(i)).unwrap();
            if i < 2 {
                j.done(&format!("r{i:05}")).unwrap();
            }
        }
        assert!(j.has_room(), "two wait: {}", j.waiting_bytes());
        j.append("r00003", &report(3)).unwrap();
        assert!(!j.has_room());
        j.done("r00003").unwrap();
        assert!(j.has_room());
        // Many appended and marked while one stays: the file does not
        // grow without end.
        for i in 10..6_000 {
            let id = format!("r{i:05}");
            j.append(&id, &report(i)).unwrap();
            j.done(&id).unwrap();
        }
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(len <= 2 * REWRITE_ABOVE, "{len}");
        drop(j);
        let (_, pending) = Journal::open(dir.path(), 3 * one).unwrap();
        assert_eq!(paths(&pending), ["keep00:f0:grant0", "r00002:f2:grant2"]);
    }
}
