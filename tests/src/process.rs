//! A process under test: its standard error is collected so tests can
//! wait for log lines of their own and show the log when they fail, and it
//! dies with the test process.

// One `prctl` in the child before it runs the program (`tied`).
#![allow(unsafe_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Log {
    text: Mutex<(String, bool)>,
    changed: Condvar,
}

/// A process's log, readable from anywhere while it runs.
#[derive(Debug, Clone)]
pub struct LogView(Arc<Log>);

impl LogView {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0.text.lock().unwrap().0.clone()
    }
}

/// A spawn request for [`tied`]'s thread, and where its answer goes.
type Spawn = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `cmd` so that it is killed when the test process ends, however
/// it ends: a test that runs out of time is killed without its `Drop`s
/// running, and would otherwise leave its hub and spokes running.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// so every such process is started from one thread that lives as long as
/// the test process.
fn tied(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Spawn>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("daemon-spawner".into())
            .spawn(move || {
                for (mut cmd, answer) in rx {
                    let _ = answer.send(spawn_tied(&mut cmd));
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(tx)
    });
    let (answer, answered) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, answer))
        .expect("the spawner thread runs");
    answered.recv().expect("the spawner thread answers")
}

fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure calls only
    // async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test process may have ended before the signal was asked.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A running process, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    log: Arc<Log>,
}

impl Daemon {
    /// Starts `cmd` with its standard error collected.
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("FERRY_LOG");
        let shown = format!("{cmd:?}");
        let mut child = tied(cmd).unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = sink.text.lock().unwrap();
                text.0.push_str(&line);
                text.0.push('\n');
                sink.changed.notify_all();
            }
            sink.text.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.text.lock().unwrap().0.clone()
    }

    /// A view of the log that outlives borrows of the process (for a test
    /// that hands the process to another thread to stop it).
    pub fn log_view(&self) -> LogView {
        LogView(self.log.clone())
    }

    /// Everything logged, once the process has closed its standard error
    /// (waiting at most `timeout` for that, as after it exited).
    pub fn full_log(&self, timeout: Duration) -> String {
        self.wait_log(timeout, |log, closed| closed.then(|| log.to_owned()))
            .unwrap_or_else(|| self.log())
    }

    /// Waits (at most `timeout`) for a line containing `needle` and returns
    /// it; `None` if the time runs out or the process closes its output.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_log(timeout, |log, _| {
            log.lines().find(|l| l.contains(needle)).map(str::to_owned)
        })
    }

    /// Calls `look` with the log so far and whether the output is closed,
    /// again on every new line, until it finds something, the output
    /// closes or `timeout` passes.
    fn wait_log<T>(
        &self,
        timeout: Duration,
        mut look: impl FnMut(&str, bool) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut text = self.log.text.lock().unwrap();
        loop {
            if let Some(found) = look(&text.0, text.1) {
                return Some(found);
            }
            let now = Instant::now();
            if text.1 || now >= deadline {
                return None;
            }
            text = self
                .log
                .changed
                .wait_timeout(text, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// How often `needle` appears in the log.
    pub fn count(&self, needle: &str) -> usize {
        self.log.text.lock().unwrap().0.matches(needle).count()
    }

    /// Waits for a line with `needle` and returns the value of its `key=` field.
    pub fn wait_for_field(&self, needle: &str, key: &str, timeout: Duration) -> Option<String> {
        let line = self.wait_for(needle, timeout)?;
        line.split(&format!("{key}="))
            .nth(1)?
            .split_whitespace()
            .next()
            .map(str::to_owned)
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits (bounded) for the exit; kills it after 15 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if let Some(status) = self.wait_exit(Duration::from_secs(15)) {
            return Some(status);
        }
        self.kill();
        None
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
