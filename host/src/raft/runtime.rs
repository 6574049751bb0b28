//! The async runtime openraft runs on: tokio, with what a deterministic
//! simulation needs.
//!
//! A simulation (`host/tests/sim.rs`) runs every member on one
//! current-thread runtime with a paused clock. The same seed then gives
//! the same run only if nothing else decides an order:
//! - openraft's randomness (election timeouts) comes from a seed when one
//!   is set ([`seed_thread_rng`]);
//! - its watch channels wake receivers in the order they started waiting
//!   ([`Watch`]: tokio's spreads waiters over buckets it picks at random);
//! - storage work runs in place, not on tokio's blocking pool
//!   ([`blocking`]).
//!
//! Outside a simulation none of this changes behaviour: the randomness
//! comes from the OS, and storage work goes to the blocking pool.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use openraft::rt::watch::{RecvError, SendError, WatchReceiver, WatchSender};
use openraft::rt::{AsyncRuntime, OptionalSend, OptionalSync};
use openraft_rand::SeedableRng;
use openraft_rand::rngs::SmallRng;
use openraft_rt_tokio::TokioRuntime;
use parking_lot::{RwLock, RwLockReadGuard};

/// openraft on tokio, with a seedable `thread_rng` and a deterministic
/// [`Watch`]; everything else is tokio's.
#[derive(Debug)]
pub struct Runtime(TokioRuntime);

thread_local! {
    static SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Seeds openraft's randomness on this thread: the draws that follow form
/// one sequence derived from `seed`. Unseeded threads draw from the OS.
pub fn seed_thread_rng(seed: u64) {
    SEED.set(Some(seed));
}

/// SplitMix64: the next seed of the chain.
fn next_seed(seed: u64) -> u64 {
    let z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl AsyncRuntime for Runtime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> SmallRng {
        match SEED.get() {
            Some(seed) => {
                SEED.set(Some(next_seed(seed)));
                SmallRng::seed_from_u64(seed)
            }
            None => SmallRng::seed_from_u64(rand::random()),
        }
    }

    fn new(threads: usize) -> Self {
        Runtime(TokioRuntime::new(threads))
    }

    fn block_on<F: Future<Output = T>, T>(&mut self, future: F) -> T {
        self.0.block_on(future)
    }
}

/// openraft's watch channels (metrics, replication progress): a value, a
/// version, and one notifier whose waiters wake in the order they came.
pub struct Watch;

struct Channel<T> {
    value: RwLock<T>,
    /// Bumped by every change.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    changed: tokio::sync::Notify,
}

pub struct Sender<T>(Arc<Channel<T>>);

pub struct Receiver<T> {
    channel: Arc<Channel<T>>,
    /// The version this receiver has seen.
    seen: u64,
}

/// A read of the current value.
pub struct Ref<'a, T>(RwLockReadGuard<'a, T>);

impl<T> Deref for Ref<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl openraft::rt::Watch for Watch {
    type Sender<T: OptionalSend + OptionalSync> = Sender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = Receiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = Ref<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Sender<T>, Receiver<T>) {
        let channel = Arc::new(Channel {
            value: RwLock::new(init),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            changed: tokio::sync::Notify::new(),
        });
        (Sender(channel.clone()), Receiver { channel, seen: 0 })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // The last sender gone closes the channel: waiting receivers learn it.
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.channel.receivers.fetch_add(1, Ordering::Relaxed);
        Receiver { channel: self.channel.clone(), seen: self.seen }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.channel.receivers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<Watch, T> for Sender<T> {
    /// As tokio's: with no receiver left the value is handed back unsent.
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.receivers.load(Ordering::Acquire) == 0 {
            return Err(SendError(value));
        }
        self.send_if_modified(|current| {
            *current = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        let mut value = self.0.value.write();
        let modified = modify(&mut value);
        if modified {
            // Under the lock: a reader sees a value with its own version.
            self.0.version.fetch_add(1, Ordering::AcqRel);
        }
        drop(value);
        if modified {
            self.0.changed.notify_waiters();
        }
        modified
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        Ref(self.0.value.read())
    }

    fn subscribe(&self) -> Receiver<T> {
        self.0.receivers.fetch_add(1, Ordering::Relaxed);
        Receiver { channel: self.0.clone(), seen: self.0.version.load(Ordering::Acquire) }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<Watch, T> for Receiver<T> {
    /// Waits for a version this receiver has not seen, and marks it seen;
    /// fails once every sender is gone.
    async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            let notified = self.channel.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let version = self.channel.version.load(Ordering::Acquire);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.channel.senders.load(Ordering::Acquire) == 0 {
                // A last send may have landed between the two loads.
                let version = self.channel.version.load(Ordering::Acquire);
                if version != self.seen {
                    self.seen = version;
                    return Ok(());
                }
                return Err(RecvError(()));
            }
            notified.await;
        }
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        Ref(self.channel.value.read())
    }

    fn borrow_and_update(&mut self) -> Ref<'_, T> {
        let value = self.channel.value.read();
        self.seen = self.channel.version.load(Ordering::Acquire);
        Ref(value)
    }
}

/// Whether this runs on a current-thread tokio runtime: the deterministic
/// simulation, which must schedule all the work itself.
pub(crate) fn on_one_thread() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Runs blocking storage work (redb reads, commits, fsyncs, snapshot
/// files) on tokio's blocking pool, off the async workers. On a
/// current-thread runtime it runs in place instead: the deterministic
/// simulation drives every member on one such thread, and work on a thread
/// it does not schedule would make runs differ.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    if on_one_thread() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(format!("blocking storage work failed: {e}")))
}

#[cfg(test)]
mod tests {
    use openraft::rt::Watch as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_receiver_sees_each_change_once_and_learns_when_the_senders_are_gone() {
        let (tx, mut rx) = Watch::channel(0u32);
        let waiter = tokio::spawn(async move {
            rx.changed().await.expect("a change");
            let first = *rx.borrow_watched();
            let closed = rx.changed().await;
            (first, closed)
        });
        tokio::task::yield_now().await;
        assert!(!tx.send_if_modified(|_| false), "nothing changed, nothing sent");
        tx.send(7).expect("a receiver listens");
        tokio::task::yield_now().await;
        drop(tx);
        let (first, closed) = waiter.await.expect("waiter");
        assert_eq!(first, 7);
        assert!(closed.is_err(), "no sender left: changed() fails");
    }

    #[tokio::test]
    async fn a_new_subscriber_starts_at_the_current_version_and_a_send_without_receivers_fails() {
        let (tx, rx) = Watch::channel(1u32);
        tx.send(2).expect("sent");
        let mut late = tx.subscribe();
        assert_eq!(*late.borrow_and_update(), 2);
        tx.send_if_modified(|v| {
            *v = 3;
            true
        });
        late.changed().await.expect("the change after subscribing");
        assert_eq!(*late.borrow_watched(), 3);
        drop((rx, late));
        assert!(tx.send(4).is_err(), "no receiver: the value comes back");
        assert_eq!(*tx.borrow_watched(), 3, "and is not stored");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_in_the_order_they_came() {
        let (tx, rx) = Watch::channel(0u32);
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (mut rx, order) = (rx.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                rx.changed().await.expect("change");
                order.lock().push(i);
            }));
            tokio::task::yield_now().await;
        }
        tx.send(1).expect("sent");
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock(), (0..16).collect::<Vec<_>>());
    }
}
