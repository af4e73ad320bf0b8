//! A work queue with the semantics controllers need: a key queued twice is processed once;
//! a key is never processed by two workers at once (an add while it is being processed
//! runs it again afterwards); delayed adds for deadlines and backoff.
//!
//! Two lanes. What just happened to a guarded object (a deletion, an invalidation) goes in
//! the urgent lane and is served before the background lane: the audit, the first pass,
//! guard edits, re-checks and retries. So a restore never waits behind work that many or
//! large guards cause (security review A5). But never for ever: after URGENT_RUN urgent
//! keys in a row while background keys wait, one background key is served, so urgent work
//! that never stops (an object rewritten without pause, a loop) cannot starve the audit
//! or the first pass that readiness waits for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Urgent keys served in a row, while background keys wait, before one background key.
pub const URGENT_RUN: u32 = 8;

/// Which lane a key waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Background,
    Urgent,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Background => "background",
            Lane::Urgent => "urgent",
        }
    }
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

/// A waiting key is held once, shared by its lane and `queued` (at 10,000 guarded Secrets,
/// all queued by the first pass, a second copy of each was most of a MiB).
struct State<K> {
    urgent: VecDeque<Arc<K>>,
    /// May hold keys promoted to the urgent lane since: skipped when popped.
    background: VecDeque<Arc<K>>,
    queued: HashMap<Arc<K>, Lane>,
    active: HashSet<K>,
    /// Added while active: queue again, in this lane, when done.
    dirty: HashMap<K, Lane>,
    /// Keys waiting in the urgent lane (the rest of `queued` wait in the background).
    urgent_waiting: usize,
    /// Urgent keys served in a row while background keys waited.
    urgent_run: u32,
}

impl<K: Clone + Eq + Hash> State<K> {
    fn pop(&mut self) -> Option<K> {
        let background_waits = self.queued.len() > self.urgent_waiting;
        if self.urgent_run >= URGENT_RUN
            && background_waits
            && let Some(key) = self.pop_background()
        {
            return Some(key);
        }
        while let Some(key) = self.urgent.pop_front() {
            if self.queued.remove(&key).is_some() {
                self.urgent_waiting -= 1;
                if background_waits {
                    self.urgent_run += 1;
                }
                return Some(Arc::unwrap_or_clone(key));
            }
        }
        self.pop_background()
    }

    fn pop_background(&mut self) -> Option<K> {
        while let Some(key) = self.background.pop_front() {
            if self.queued.get(&key) == Some(&Lane::Background) {
                self.queued.remove(&key);
                self.urgent_run = 0;
                return Some(Arc::unwrap_or_clone(key));
            }
        }
        None
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                urgent: VecDeque::new(),
                background: VecDeque::new(),
                queued: HashMap::new(),
                active: HashSet::new(),
                dirty: HashMap::new(),
                urgent_waiting: 0,
                urgent_run: 0,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding this lock cannot leave the sets inconsistent in a way that
        // matters more than losing the queue; keep going with the data as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue in the urgent lane: something just happened to it.
    pub fn add(&self, key: K) {
        self.add_in(key, Lane::Urgent);
    }

    /// Queue in the background lane: served when nothing is urgent.
    pub fn add_background(&self, key: K) {
        self.add_in(key, Lane::Background);
    }

    /// Queue in `lane`. A key already waiting moves up to the urgent lane if asked, never
    /// down.
    pub fn add_in(&self, key: K, lane: Lane) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            let dirty = s.dirty.entry(key).or_insert(lane);
            *dirty = (*dirty).max(lane);
            return;
        }
        let waiting = s.queued.get(&key).copied();
        if waiting.is_some_and(|w| w >= lane) {
            return;
        }
        let key = Arc::new(key);
        s.queued.insert(Arc::clone(&key), lane);
        match lane {
            Lane::Urgent => {
                s.urgent_waiting += 1;
                s.urgent.push_back(key)
            }
            Lane::Background => s.background.push_back(key),
        }
        drop(s);
        self.notify.notify_one();
    }

    pub fn add_all(&self, keys: impl IntoIterator<Item = K>, lane: Lane) {
        for k in keys {
            self.add_in(k, lane);
        }
    }

    /// Add to the background lane after a delay (a deadline, or backoff after an error).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        self.add_after_in(key, delay, Lane::Background);
    }

    /// Add to `lane` after a delay; nothing waits for it meanwhile (a timer task).
    pub fn add_after_in(self: &Arc<Self>, key: K, delay: Duration, lane: Lane) {
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add_in(key, lane);
        });
    }

    /// Wait for the next key, urgent ones first, and mark it active. Call `done` when
    /// finished with it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.pop() {
                    s.active.insert(key.clone());
                    if !s.queued.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            s.dirty.remove(key)
        };
        if let Some(lane) = again {
            self.add_in(key.clone(), lane);
        }
    }

    /// Keys waiting (not counting active ones).
    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }

    /// Keys waiting in one lane.
    pub fn waiting_in(&self, lane: Lane) -> usize {
        let s = self.lock();
        match lane {
            Lane::Urgent => s.urgent_waiting,
            Lane::Background => s.queued.len() - s.urgent_waiting,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nothing waiting and nothing being processed (delayed adds not counted).
    pub fn is_idle(&self) -> bool {
        let s = self.lock();
        s.queued.is_empty() && s.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_processed_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_active_runs_again_after_done_and_not_concurrently() {
        let q = WorkQueue::new();
        q.add("a");
        let k = q.next().await;
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker while active");
        q.done(&k);
        assert_eq!(q.len(), 1, "queued again once the first run is done");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn next_waits_for_an_add() {
        let q = WorkQueue::new();
        let q2 = Arc::clone(&q);
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.add(7);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("join");
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn urgent_keys_are_served_before_any_background_key() {
        let q = WorkQueue::new();
        q.add_all(0..1000, Lane::Background);
        q.add(5000);
        assert_eq!(
            q.next().await,
            5000,
            "urgent first, whatever waits before it"
        );
        assert_eq!(q.next().await, 0);
        // A background key asked for urgently moves up, and is served once.
        q.add(500);
        assert_eq!(q.next().await, 500);
        assert_eq!(q.waiting_in(Lane::Urgent), 0);
        assert_eq!(q.waiting_in(Lane::Background), 998);
        let mut rest = Vec::new();
        while !q.is_empty() {
            rest.push(q.next().await);
        }
        assert_eq!(rest.len(), 998);
        assert!(
            !rest.contains(&500),
            "not served a second time from its old place"
        );
    }

    #[tokio::test]
    async fn urgent_work_that_never_stops_still_lets_the_background_through() {
        let q = WorkQueue::new();
        q.add_all(["first-pass-a", "first-pass-b"], Lane::Background);
        let mut served = Vec::new();
        for _ in 0..(2 * (URGENT_RUN + 1)) {
            // The same object, changed again as soon as it was looked at.
            q.add("busy");
            let k = q.next().await;
            q.done(&k);
            served.push(k);
        }
        let at = |k| served.iter().position(|s| *s == k);
        assert_eq!(at("first-pass-a"), Some(URGENT_RUN as usize));
        assert_eq!(at("first-pass-b"), Some(2 * URGENT_RUN as usize + 1));
        assert_eq!(q.next().await, "busy", "and urgent work goes on");
    }

    #[tokio::test]
    async fn an_urgent_key_is_not_moved_down_and_dirty_keys_keep_their_lane() {
        let q = WorkQueue::new();
        q.add("a");
        q.add_background("a");
        assert_eq!(q.waiting_in(Lane::Urgent), 1);
        let k = q.next().await;
        q.add_background("a");
        q.add("a");
        q.done(&k);
        assert_eq!(
            q.waiting_in(Lane::Urgent),
            1,
            "an urgent add while active stays urgent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_urgent_add_is_served_before_the_background_once_due() {
        let q = WorkQueue::new();
        q.add_all(["audit-a", "audit-b"], Lane::Background);
        q.add_after_in("restore", Duration::from_secs(2), Lane::Urgent);
        tokio::time::sleep(Duration::from_millis(1999)).await;
        assert_eq!(q.waiting_in(Lane::Urgent), 0, "not before its time");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(q.waiting_in(Lane::Urgent), 1);
        assert_eq!(q.next().await, "restore", "ahead of the background lane");
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_adds_once_the_delay_has_passed() {
        let q = WorkQueue::new();
        q.add_after("late", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.waiting_in(Lane::Background), 1);
    }
}
