//! A work queue with the semantics controllers need: a key queued twice is processed once;
//! a key is never processed by two workers at once (an add while it is being processed
//! runs it again afterwards); delayed adds for deadlines and backoff.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

struct State<K> {
    order: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Added while active: queue again when done.
    dirty: HashSet<K>,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                order: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding this lock cannot leave the sets inconsistent in a way that
        // matters more than losing the queue; keep going with the data as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.order.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn add_all(&self, keys: impl IntoIterator<Item = K>) {
        for k in keys {
            self.add(k);
        }
    }

    /// Add after a delay (a deadline, or backoff after an error).
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Wait for the next key and mark it active. Call `done` when finished with it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.order.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    if !s.order.is_empty() {
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
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting (not counting active ones).
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nothing waiting and nothing being processed (delayed adds not counted).
    pub fn is_idle(&self) -> bool {
        let s = self.lock();
        s.order.is_empty() && s.active.is_empty()
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

    #[tokio::test(start_paused = true)]
    async fn add_after_adds_once_the_delay_has_passed() {
        let q = WorkQueue::new();
        q.add_after("late", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.len(), 1);
    }
}
