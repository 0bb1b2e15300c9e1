//! Threads for background work (the click writer, the store's own IO
//! threads) that take their share of the CPU without preempting the
//! request path.
//!
//! The server's worker answers redirects; the click writer and sled's IO
//! threads run on the same cores. Under Linux's default policy a thread
//! that wakes after sleeping is usually let preempt the running one, so
//! every group commit (the writer, then sled's IO threads, each woken in
//! turn) cut into the redirects being answered. A [`Thread`] runs as
//! `SCHED_BATCH`: the same share of the CPU (its nice value is unchanged,
//! so a busy server still gives it the time it needs and no click is
//! dropped for want of it), but its wake-ups wait for the worker to yield
//! or for its time slice to end. Threads a `Thread` starts inherit the
//! policy, which is how sled's IO threads get it: the server opens its
//! store on one, and sled's process-wide IO pool starts with the first
//! open. Measured at a fixed 20,000 redirects a second, 10,000 links, the
//! same server switched between the two policies over eight alternating
//! pairs of 10 s runs: median p99 1.11 → 0.98 ms, p99.9 4.07 → 3.58 ms,
//! better in five pairs of eight — a small effect beside this machine's
//! run-to-run spread (README → Performance). Elsewhere than Linux the
//! policy is not set and nothing else changes.

use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A named background thread running the jobs handed to it, in order; it
/// ends once its handle is dropped and the jobs already sent have run.
pub struct Thread {
    /// Jobs for the thread.
    jobs: mpsc::Sender<Job>,
}

/// How much of the CPU a [`Thread`] asks for beside the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Its fair share (work the clicks depend on: the click writer).
    Fair,
    /// Mostly what the request path leaves ([`LEFTOVER_NICE`]: work that
    /// may fall behind under load and catch up after, such as the
    /// console's rollups).
    Leftover,
}

/// The nice value of a [`Share::Leftover`] thread: a tenth of a saturated
/// core, enough that a sled batch it holds ends within tens of
/// milliseconds. At 19 (a seventieth) or as `SCHED_IDLE` the rollups
/// starved while holding sled's write lock, the click writer waited on it
/// for up to 0.6 s and its queue overflowed (docs/performance.md).
const LEFTOVER_NICE: i32 = 10;

impl Thread {
    /// Starts a thread called `name` that takes its fair share.
    pub fn spawn(name: &str) -> std::io::Result<Self> {
        Self::spawn_with(name, Share::Fair)
    }

    /// Starts a thread called `name` that takes `share` of the CPU.
    pub fn spawn_with(name: &str, share: Share) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if let Err(error) = yield_to_requests(share) {
                    tracing::debug!(%error, "background thread keeps the default scheduling policy");
                }
                for job in rx {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread and waits, without blocking the caller's
    /// runtime, for its result.
    ///
    /// # Panics
    /// If `f` panics (the thread ends with it).
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(job)
            .expect("a background thread runs until its handle is dropped");
        rx.await.expect("background jobs do not panic")
    }
}

/// Schedules the calling thread as `SCHED_BATCH`, at [`LEFTOVER_NICE`] for
/// [`Share::Leftover`] (Linux; elsewhere a no-op). A hint: if the system
/// refuses, the thread runs as before.
fn yield_to_requests(share: Share) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread (pid 0) with a
        // valid, initialised parameter it only reads.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if share == Share::Leftover {
            // On Linux a nice value is the thread's own, named by its id.
            // SAFETY: plain system calls on the calling thread; no memory.
            let done = unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    libc::gettid() as libc::id_t,
                    LEFTOVER_NICE,
                )
            };
            if done != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = share;
    Ok(())
}

/// Asks the scheduler to let the calling thread (one answering requests)
/// preempt a background thread as soon as it wakes: a 0.1 ms time slice
/// (`sched_setattr`'s `sched_runtime`, which Linux's EEVDF scheduler takes
/// as the thread's slice since 6.12). A thread runs at most the shortest
/// slice among those waiting before a woken one with an earlier deadline
/// takes the core, so the redirects stop waiting out the click writer's
/// or the rollups' default 3 ms slices; the share of the CPU each gets is
/// unchanged (same nice value). Elsewhere (older kernels ignore the value;
/// other systems) nothing changes.
pub fn answer_promptly() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            sched_nice: 0,
            sched_priority: 0,
            sched_runtime: REQUEST_SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: the calling thread (pid 0), a valid `sched_attr` of the
        // size it states, which the kernel only reads; no flags.
        if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The time slice of a thread answering requests: the shortest Linux
/// allows.
#[cfg(target_os = "linux")]
const REQUEST_SLICE_NS: u64 = 100_000;

/// The calling thread's scheduling policy (tests).
#[cfg(all(test, target_os = "linux"))]
fn policy() -> i32 {
    // SAFETY: reads the calling thread's policy; no memory is passed.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_the_named_thread_and_return_their_results() {
        let t = Thread::spawn("bg-test").unwrap();
        let first = t.run(|| std::thread::current().name().map(str::to_owned));
        assert_eq!(first.await.as_deref(), Some("bg-test"));
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..5 {
            let order = order.clone();
            t.run(move || order.lock().unwrap().push(i)).await;
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_and_threads_it_starts_are_batch_scheduled() {
        // Some sandboxes refuse the call; the policy is a hint there.
        if let Err(e) = std::thread::spawn(|| yield_to_requests(Share::Fair))
            .join()
            .unwrap()
        {
            eprintln!("this system refuses SCHED_BATCH ({e}): nothing to check");
            return;
        }
        let before = policy();
        let t = Thread::spawn("bg-policy").unwrap();
        let (own, child) = t
            .run(|| (policy(), std::thread::spawn(policy).join().unwrap()))
            .await;
        assert_eq!(own, libc::SCHED_BATCH);
        assert_eq!(child, libc::SCHED_BATCH, "inherited");
        assert_eq!(policy(), before, "the caller's is unchanged");
        let low = Thread::spawn_with("bg-leftover", Share::Leftover).unwrap();
        // SAFETY: reads the calling thread's nice value; no memory.
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(
            low.run(move || (policy(), nice())).await,
            (libc::SCHED_BATCH, LEFTOVER_NICE)
        );
        assert_eq!(t.run(nice).await, 0, "a fair share keeps its nice value");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_request_thread_keeps_its_policy_and_nice_value() {
        let (result, policy, nice, slice) = std::thread::spawn(|| {
            let r = answer_promptly();
            // SAFETY: reads the calling thread's nice value; no memory.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            // The slice as the scheduler reports it, where it does.
            let slice = std::fs::read_to_string("/proc/thread-self/sched")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("se.slice"))
                        .and_then(|l| l.split(':').nth(1))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                });
            (r, policy(), nice, slice)
        })
        .join()
        .unwrap();
        if let Err(e) = result {
            eprintln!("this system refuses a custom slice ({e}): nothing to check");
            return;
        }
        assert_eq!((policy, nice), (libc::SCHED_OTHER, 0));
        if let Some(slice) = slice {
            assert_eq!(slice, REQUEST_SLICE_NS, "the slice asked for");
        }
    }
}
