//! Session liveness: who has been heard from, and who has gone quiet.
//!
//! Pings are not log entries. Each node notes when it last heard from each
//! session (any frame counts). Only the leader acts on it: a session silent
//! for its whole timeout gets an `ExpireSession` entry, and its apply
//! removes the session and its ephemerals on every replica.
//!
//! After a restart or a leader change nobody knows when a session was last
//! heard from, so every session gets a full timeout from that moment
//! ([`Liveness::restart_all`]) before it can expire.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

use parking_lot::Mutex;

struct Entry {
    timeout: Duration,
    deadline: Instant,
    /// When an expiry was proposed that has not applied yet. A proposal
    /// can be lost without a word (refused by a core that had just stopped
    /// leading, or cut from the log by the next leader while this node's
    /// check still saw it lead): one that has not applied within another
    /// timeout is proposed again.
    expiring: Option<Instant>,
}

#[derive(Default)]
pub struct Liveness {
    sessions: Mutex<HashMap<i64, Entry>>,
    /// Heard from since the last report to the leader.
    touched: Mutex<std::collections::HashSet<i64>>,
}

impl Liveness {
    /// A session that is live in the replicated state.
    pub fn add(&self, id: i64, timeout_ms: i32, now: Instant) {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        self.sessions.lock().insert(id, Entry { timeout, deadline: now + timeout, expiring: None });
    }

    pub fn remove(&self, id: i64) {
        self.sessions.lock().remove(&id);
    }

    /// `sessions` (id, timeout) are the live ones now, each with a full
    /// timeout from `now`: after a start, or a snapshot installed.
    pub fn replace(&self, sessions: Vec<(i64, i32)>, now: Instant) {
        let mut live = self.sessions.lock();
        live.clear();
        for (id, timeout_ms) in sessions {
            let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
            live.insert(id, Entry { timeout, deadline: now + timeout, expiring: None });
        }
    }

    /// The session was heard from.
    pub fn touch(&self, id: i64, now: Instant) {
        if let Some(e) = self.sessions.lock().get_mut(&id) {
            e.deadline = now + e.timeout;
            self.touched.lock().insert(id);
        }
    }

    /// The sessions heard from since the last call, in id order: what a
    /// follower reports to the leader.
    pub fn take_touched(&self) -> Vec<i64> {
        let mut out: Vec<i64> = std::mem::take(&mut *self.touched.lock()).into_iter().collect();
        out.sort_unstable();
        out
    }

    /// Every session gets a full timeout from `now`.
    pub fn restart_all(&self, now: Instant) {
        for e in self.sessions.lock().values_mut() {
            e.deadline = now + e.timeout;
            e.expiring = None;
        }
    }

    /// Sessions past their deadline with no expiry in flight (none proposed
    /// within their timeout); they are marked as expiring from `now`.
    /// Ordered by id, so proposals are deterministic.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .sessions
            .lock()
            .iter_mut()
            .filter(|(_, e)| e.deadline <= now && e.expiring.is_none_or(|at| now >= at + e.timeout))
            .map(|(id, e)| {
                e.expiring = Some(now);
                *id
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// An expiry proposal failed (lost leadership): try again later.
    pub fn unmark(&self, id: i64) {
        if let Some(e) = self.sessions.lock().get_mut(&id) {
            e.expiring = None;
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_after_silence_and_full_timeout_on_restart() {
        let t0 = Instant::now();
        let l = Liveness::default();
        l.add(1, 1000, t0);
        l.add(2, 1000, t0);
        l.touch(2, t0 + Duration::from_millis(900));
        assert_eq!(l.take_expired(t0 + Duration::from_millis(1000)), vec![1]);
        // Marked: not proposed twice.
        assert_eq!(l.take_expired(t0 + Duration::from_millis(1100)), Vec::<i64>::new());
        l.restart_all(t0 + Duration::from_millis(1100));
        assert_eq!(l.take_expired(t0 + Duration::from_millis(2000)), Vec::<i64>::new());
        assert_eq!(l.take_expired(t0 + Duration::from_millis(2100)), vec![1, 2]);
    }

    /// An expiry that never applies (its proposal lost) is proposed again
    /// once another timeout passes, as long as the session stays silent.
    #[test]
    fn a_lost_expiry_is_proposed_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let l = Liveness::default();
        l.add(1, 1000, t0);
        l.add(2, 1000, t0);
        assert_eq!(l.take_expired(ms(1000)), vec![1, 2]);
        assert_eq!(l.take_expired(ms(1999)), Vec::<i64>::new());
        // Session 2 spoke up in the meantime: its deadline moved.
        l.touch(2, ms(1500));
        assert_eq!(l.take_expired(ms(2000)), vec![1]);
        assert_eq!(l.take_expired(ms(2500)), vec![2]);
        // An applied expiry removes the session: nothing more to propose.
        l.remove(1);
        assert_eq!(l.take_expired(ms(5000)), vec![2]);
    }
}
