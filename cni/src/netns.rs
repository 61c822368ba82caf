//! Work inside a network namespace: on a dedicated thread, with a runtime of its own.
//!
//! `setns()` changes the namespace of the calling *thread*. Done on a tokio worker, it would
//! silently move every other task scheduled there into the other namespace (or strand ours in
//! the wrong one), so all namespace work — netlink sockets, `/proc/sys/net` writes, `iptables`
//! children, which inherit the forking thread's namespace — happens on a thread that enters the
//! namespace first and never does anything else. A current-thread tokio runtime made on that
//! thread drives rtnetlink, and a netlink socket opened there belongs to that namespace.
//!
//! Both halves of the crate use it, in the two shapes their lifetimes call for:
//! - [`NetnsThread`]: one long-lived thread taking jobs, for the node agent's node network,
//!   which keeps its socket open across syncs;
//! - [`scoped`]: one short-lived thread per batch, for the plugin, whose batches borrow from
//!   the caller and whose process ends after one command. A thread that entered a Pod's
//!   namespace ends with its batch, so it never carries that namespace into other work.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nix::sched::{CloneFlags, setns};
use tokio::runtime::Runtime;

/// Why the namespace thread could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {}", path.display())]
    Open {
        /// The namespace file, e.g. `/run/netns/node1`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `setns()` refused.
    #[error("cannot enter network namespace {}", path.display())]
    Enter {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The thread or its runtime could not be started.
    #[error("cannot start the namespace thread")]
    Start(#[source] std::io::Error),
    /// The thread ended (its work panicked, or its owner is being dropped).
    #[error("the namespace thread is gone")]
    Gone,
}

type Job = Box<dyn FnOnce(&Runtime) + Send>;

const THREAD_NAME: &str = "skiff-netns";

/// Runs `work` on a fresh thread inside the namespace at `netns` (`None`: this process's own),
/// handing it a current-thread runtime made there; returns what `work` returns. The thread ends
/// with `work`, so `work` may borrow from the caller.
pub fn scoped<R, F>(netns: Option<&Path>, work: F) -> Result<R, NetnsError>
where
    R: Send,
    F: FnOnce(Runtime) -> R + Send,
{
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn_scoped(scope, move || enter(netns).map(work))
            .map_err(NetnsError::Start)?;
        worker.join().map_err(|_| NetnsError::Gone)?
    })
}

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
            .name(THREAD_NAME.to_owned())
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
        F: FnOnce(&Runtime) -> T + Send + 'static,
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

/// Enters `netns` (if given) on the calling thread and makes that thread's runtime.
fn enter(netns: Option<&Path>) -> Result<Runtime, NetnsError> {
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

/// The node network's iptables door runs its binaries on this thread, in its namespace.
impl skiff_iptables::Namespace for NetnsThread {
    fn output(
        &self,
        command: std::process::Command,
        input: Option<&[u8]>,
    ) -> Result<std::io::Result<std::process::Output>, skiff_iptables::NamespaceError> {
        let input = input.map(<[u8]>::to_vec);
        self.run(move || skiff_iptables::output_with_input(command, input.as_deref()))
            .map_err(Into::into)
    }
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
        let missing = Path::new("/run/netns/skiff-no-such-ns");
        let err = NetnsThread::spawn(Some(missing)).unwrap_err();
        assert!(
            err.to_string().contains("/run/netns/skiff-no-such-ns"),
            "{err}"
        );
        let err = scoped(Some(missing), |_| ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }

    #[test]
    fn scoped_work_runs_on_its_own_thread_with_a_runtime_and_may_borrow() {
        let here = thread::current().id();
        let borrowed = [1, 2, 3];
        let (there, sum) = scoped(None, |runtime| {
            let sum = runtime.block_on(async { borrowed.iter().sum::<i32>() });
            (thread::current().id(), sum)
        })
        .unwrap();
        assert_ne!(there, here);
        assert_eq!(sum, 6);
        let panicked = scoped(None, |_| -> () { panic!("boom") });
        assert!(matches!(panicked, Err(NetnsError::Gone)));
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_hang() {
        let thread = NetnsThread::spawn(None).unwrap();
        let result: Result<(), _> = thread.run(|| panic!("boom"));
        assert!(matches!(result, Err(NetnsError::Gone)));
        assert!(matches!(thread.run(|| 1), Err(NetnsError::Gone)));
    }
}
