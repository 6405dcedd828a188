//! The tasks a daemon's `run` starts, each under a name, and joined when
//! it stops: a task that panicked (or ended with an error) is logged by
//! name and turns into an error from `run`, so the process exits non-zero
//! instead of looking as if all went well.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// How one task ended.
#[derive(Debug)]
enum Outcome {
    /// It returned.
    Done,
    /// It returned an error, here as text.
    Failed(String),
    /// It panicked, with this message when it had one.
    Panicked(Option<String>),
}

/// A set of named tasks (see the module's header).
#[derive(Debug, Default)]
pub struct NamedTasks {
    set: JoinSet<Outcome>,
    names: HashMap<Id, &'static str>,
}

/// The tasks that did not end well.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}", describe(.panicked, .failed))]
pub struct TasksFailed {
    /// The names of the tasks that panicked, in the order they were started.
    pub panicked: Vec<&'static str>,
    /// The tasks that returned an error, with the error.
    pub failed: Vec<(&'static str, String)>,
}

fn describe(panicked: &[&'static str], failed: &[(&'static str, String)]) -> String {
    panicked
        .iter()
        .map(|name| format!("the task '{name}' panicked"))
        .chain(
            failed
                .iter()
                .map(|(name, e)| format!("the task '{name}' failed: {e}")),
        )
        .collect::<Vec<_>>()
        .join("; ")
}

impl NamedTasks {
    /// An empty set.
    pub fn new() -> NamedTasks {
        NamedTasks::default()
    }

    /// Starts `task` under `name`.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.set.spawn(async move {
            task.await;
            Outcome::Done
        });
        self.names.insert(handle.id(), name);
    }

    /// Starts `task`, which may end with an error, under `name`.
    pub fn spawn_fallible<F, E>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let handle = self.set.spawn(async move {
            match task.await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// Joins `thread` (a thread of its own, such as a server with its own
    /// runtime) with the tasks, under `name`.
    pub fn join_thread(&mut self, name: &'static str, thread: std::thread::JoinHandle<()>) {
        let handle = self.set.spawn(async move {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(panic)) => Outcome::Panicked(panic_message(panic.as_ref())),
                Err(e) => Outcome::Failed(format!("cannot join the thread: {e}")),
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// How many tasks are in the set (finished ones included, until
    /// joined).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits for every task, logs at error level each one that panicked
    /// or failed, and names them in the error.
    pub async fn join_all(mut self) -> Result<(), TasksFailed> {
        let mut panicked = Vec::new();
        let mut failed = Vec::new();
        while let Some(joined) = self.set.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome),
                Err(e) => {
                    let id = e.id();
                    let outcome = match e.try_into_panic() {
                        Ok(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    (id, outcome)
                }
            };
            let task = self.names.get(&id).copied().unwrap_or("unnamed");
            match outcome {
                Outcome::Done => {}
                Outcome::Failed(error) => {
                    tracing::error!(task, %error, "a task failed");
                    failed.push((task, error));
                }
                Outcome::Panicked(message) => {
                    tracing::error!(
                        task,
                        panic = message.as_deref().unwrap_or("(no message)"),
                        "a task panicked"
                    );
                    panicked.push(task);
                }
            }
        }
        if panicked.is_empty() && failed.is_empty() {
            Ok(())
        } else {
            Err(TasksFailed { panicked, failed })
        }
    }
}

/// The message a panic was raised with, when it was text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn tasks_that_panicked_or_failed_are_logged_and_named() {
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let mut tasks = NamedTasks::new();
        tasks.spawn("quiet", async {});
        tasks.spawn("steering", async { panic!("on purpose") });
        tasks.spawn_fallible("tunnels", async { Err::<(), _>("no hub answers") });
        tasks.join_thread(
            "dns",
            std::thread::spawn(|| panic!("the thread, on purpose")),
        );
        assert_eq!(tasks.len(), 4);
        let err = tasks.join_all().await.unwrap_err();
        let mut panicked = err.panicked.clone();
        panicked.sort_unstable();
        assert_eq!(panicked, ["dns", "steering"]);
        assert_eq!(err.failed, [("tunnels", "no hub answers".to_owned())]);
        let text = err.to_string();
        assert!(text.contains("the task 'steering' panicked"), "{text}");
        assert!(
            text.contains("the task 'tunnels' failed: no hub answers"),
            "{text}"
        );

        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        for (task, what) in [
            ("steering", "a task panicked"),
            ("dns", "a task panicked"),
            ("tunnels", "a task failed"),
        ] {
            assert!(
                log.lines().any(|l| l.contains("ERROR")
                    && l.contains(what)
                    && l.contains(&format!("task=\"{task}\""))),
                "{task}: {log}"
            );
        }
        assert!(log.contains("panic=\"on purpose\""), "{log}");
        assert!(!log.contains("quiet"), "{log}");
    }

    #[tokio::test]
    async fn tasks_that_end_well_are_no_error() {
        let mut tasks = NamedTasks::new();
        assert!(tasks.is_empty());
        tasks.spawn("a", async {});
        tasks.spawn_fallible("b", async { Ok::<(), String>(()) });
        tasks.join_thread("c", std::thread::spawn(|| {}));
        assert_eq!(tasks.join_all().await, Ok(()));
    }
}
