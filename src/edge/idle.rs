//! Closing connections that do nothing: a client that opens a connection
//! and never finishes a request head (slowloris), or leaves a keep-alive
//! connection unused, holds a socket and a task.
//!
//! hyper's own `header_read_timeout` arms a timer for every request: a
//! boxed sleep, a clock read, a timer-wheel insertion and removal under
//! the timer's lock — ~1.3% of the load test's samples. Here one timer per
//! connection fires once every `limit`; a connection that in a whole
//! period began or finished no request and wrote no byte, and has no
//! request in progress, is closed. So an idle or stalled connection goes after one to
//! two periods, while a slow upload (its request is in progress) or a slow
//! reader of a long answer (its bytes are being written) stays.

use hyper::rt::{Read, ReadBufCursor, Write};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// What a connection has done. Every access happens inside the
/// connection's own task, one at a time, so plain loads and stores of
/// relaxed atomics count correctly without a locked instruction.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests begun and finished plus writes done: changes whenever
    /// something happens.
    progress: AtomicU64,
    /// Requests begun and not yet answered.
    in_flight: AtomicU64,
}

impl Activity {
    fn bump(counter: &AtomicU64, by: i64) {
        counter.store(counter.load(Relaxed).wrapping_add_signed(by), Relaxed);
    }

    /// A request has begun; it is in progress until the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        Self::bump(&self.progress, 1);
        Self::bump(&self.in_flight, 1);
        InFlight(self.clone())
    }
}

/// A request in progress (see [`Activity::begin`]).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Finishing a request is progress too: the period after a long
        // request starts at its end.
        Activity::bump(&self.0.progress, 1);
        Activity::bump(&self.0.in_flight, -1);
    }
}

/// Runs `conn` until it finishes (`Some` of its output), or until a whole
/// `limit` passes in which `activity` shows no progress and no request in
/// progress (`None`; dropping the connection closes it).
pub(super) async fn until_idle<F: Future>(
    conn: F,
    activity: &Activity,
    limit: Duration,
) -> Option<F::Output> {
    let mut conn = std::pin::pin!(conn);
    let mut timer = std::pin::pin!(tokio::time::sleep(limit));
    let mut seen = activity.progress.load(Relaxed);
    // The timer is polled only until it has the task's waker, and again
    // once it has fired: not on every wake-up of a busy connection.
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if armed && !timer.is_elapsed() {
            return Poll::Pending;
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = activity.progress.load(Relaxed);
            if now == seen && activity.in_flight.load(Relaxed) == 0 {
                return Poll::Ready(None);
            }
            seen = now;
            timer.as_mut().reset(Instant::now() + limit);
        }
        armed = true;
        Poll::Pending
    })
    .await
}

/// A connection's IO, counting its writes as progress.
pub(super) struct Tracked<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub(super) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }

    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            Activity::bump(&self.activity.progress, 1);
        }
    }
}

impl<T: Read + Unpin> Read for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_connection_doing_nothing_closes_after_one_to_two_periods() {
        let activity = Activity::default();
        let started = Instant::now();
        let out = until_idle(std::future::pending::<()>(), &activity, LIMIT).await;
        assert!(out.is_none());
        assert_eq!(
            started.elapsed(),
            LIMIT,
            "nothing happened in the first period"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn progress_and_requests_in_progress_keep_it_open() {
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let a = activity.clone();
        let work = async move {
            // A request every 9 s for a minute, then one in progress for
            // 35 s, then nothing: closed one to two periods later.
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                drop(a.begin());
            }
            let slow = a.begin();
            tokio::time::sleep(Duration::from_secs(35)).await;
            drop(slow);
            std::future::pending::<()>().await
        };
        let out = until_idle(work, &activity, LIMIT).await;
        assert!(out.is_none());
        let open = started.elapsed();
        assert!(
            open >= Duration::from_secs(54 + 35 + 10) && open <= Duration::from_secs(54 + 35 + 20),
            "closed after {open:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_connection_returns_its_output() {
        let activity = Activity::default();
        let work = async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            7
        };
        // Busy with no recorded progress: a guard is held throughout.
        let held = Arc::new(Activity::default());
        let _request = held.begin();
        assert_eq!(until_idle(work, &held, LIMIT).await, Some(7));
        let quick = until_idle(async { 8 }, &activity, LIMIT).await;
        assert_eq!(quick, Some(8));
    }
}
