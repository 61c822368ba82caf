//! A dedicated thread inside the node's network namespace, with a runtime of its own.
//!
//! `setns()` changes the namespace of the calling *thread*. Done on a tokio worker, it would
//! silently move every other task scheduled there into the node's namespace (or strand ours in
//! the wrong one), so all namespace work — netlink sockets, `/proc/sys/net` writes, `iptables`
//! children, which inherit the forking thread's namespace — happens on one thread that enters
//! the namespace once and lives as long as its owner. A current-thread tokio runtime on that
//! thread drives rtnetlink; nothing else ever runs on it.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nix::sched::{CloneFlags, setns};

/// Why the namespace thread could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The namespace file, e.g. `/run/netns/node1`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `setns()` refused.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The thread or its runtime could not be started.
    #[error("cannot start the namespace thread: {0}")]
    Start(#[source] std::io::Error),
    /// The thread ended (it panicked, or its owner is being dropped).
    #[error("the namespace thread is gone")]
    Gone,
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A thread that has entered one network namespace and runs jobs there, one at a time.
#[derive(Debug)]
pub struct NetnsThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    netns: Option<PathBuf>,
}

impl NetnsThread {
    /// Starts the thread in the namespace at `netns` (e.g. `/run/netns/x`), or in this
    /// process's own namespace when `None`.
    pub fn spawn(netns: Option<&Path>) -> Result<Self, NetnsError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<Result<(), NetnsError>>(1);
        let path = netns.map(Path::to_path_buf);
        let target = path.clone();
        let thread = thread::Builder::new()
            .name("skiff-netns".to_owned())
            .spawn(move || {
                let runtime = match enter(target.as_deref()) {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                for job in queue {
                    job(&runtime);
                }
            })
            .map_err(NetnsError::Start)?;
        ready.recv().map_err(|_| NetnsError::Gone)??;
        Ok(NetnsThread {
            jobs: Some(jobs),
            thread: Some(thread),
            netns: path,
        })
    }

    /// The namespace this thread is in (`None`: the process's own).
    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }

    /// Runs blocking `work` on the thread and returns its result.
    pub fn run<T, F>(&self, work: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.submit(move |_| work())
    }

    /// Runs the future `make()` returns to completion on the thread's runtime. The future itself
    /// never leaves the thread, so it need not be `Send`.
    pub fn block_on<T, Fut, F>(&self, make: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        Fut: Future<Output = T>,
        F: FnOnce() -> Fut + Send + 'static,
    {
        self.submit(move |runtime| {
            let future: Pin<Box<Fut>> = Box::pin(make());
            runtime.block_on(future)
        })
    }

    fn submit<T, F>(&self, job: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
    {
        let (reply_tx, reply) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or(NetnsError::Gone)?;
        jobs.send(Box::new(move |runtime| {
            let _ = reply_tx.send(job(runtime));
        }))
        .map_err(|_| NetnsError::Gone)?;
        // A panicking job drops `reply_tx` unsent, and the thread with it.
        reply.recv().map_err(|_| NetnsError::Gone)
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter(netns: Option<&Path>) -> Result<tokio::runtime::Runtime, NetnsError> {
    if let Some(path) = netns {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: path.to_path_buf(),
            source,
        })?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetnsError::Start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_one_dedicated_thread_and_return_their_results() {
        let thread = NetnsThread::spawn(None).unwrap();
        let here = thread::current().id();
        let (a, b) = (
            thread.run(|| thread::current().id()).unwrap(),
            thread.run(|| thread::current().id()).unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, here);
        let name = thread
            .run(|| thread::current().name().map(str::to_owned))
            .unwrap();
        assert_eq!(name.as_deref(), Some("skiff-netns"));
        let sum = thread.block_on(|| async { 40 + 2 }).unwrap();
        assert_eq!(sum, 42);
    }

    #[test]
    fn a_missing_namespace_is_reported_with_its_path() {
        let err = NetnsThread::spawn(Some(Path::new("/run/netns/skiff-no-such-ns"))).unwrap_err();
        assert!(
            err.to_string().contains("/run/netns/skiff-no-such-ns"),
            "{err}"
        );
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_hang() {
        let thread = NetnsThread::spawn(None).unwrap();
        let result: Result<(), _> = thread.run(|| panic!("boom"));
        assert!(matches!(result, Err(NetnsError::Gone)));
        assert!(matches!(thread.run(|| 1), Err(NetnsError::Gone)));
    }
}
