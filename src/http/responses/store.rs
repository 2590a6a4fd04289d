//! The responses kept for `previous_response_id` and `GET /v1/responses/{id}`: at most
//! `capacity` of them (the oldest go first), none older than `ttl`. A stored response keeps the
//! conversation it ended (its input, its output), so that the next request continues it; the
//! engine finds that conversation's cells cached, as for a chat follow-up.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::ChatMessage;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object as it was sent.
    pub response: Value,
    /// The conversation up to and including this response's output.
    pub conversation: Vec<ChatMessage>,
    stored: Instant,
}

/// Recent responses by id.
#[derive(Debug)]
pub struct ResponseStore {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Stored>,
    /// Ids oldest first; an id whose response was deleted stays until it reaches the front.
    order: VecDeque<String>,
}

impl ResponseStore {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            inner: Mutex::default(),
        }
    }

    pub fn put(&self, id: String, response: Value, conversation: Vec<ChatMessage>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(self.ttl);
        inner.by_id.insert(
            id.clone(),
            Stored {
                response,
                conversation,
                stored: Instant::now(),
            },
        );
        inner.order.push_back(id);
        while inner.by_id.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            // An id put again later stays under its newer entry.
            if !inner.order.contains(&oldest) {
                inner.by_id.remove(&oldest);
            }
        }
    }

    /// The response stored under `id`, unless it expired.
    pub fn get(&self, id: &str) -> Option<Stored> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(self.ttl);
        inner.by_id.get(id).cloned()
    }

    /// Forgets `id`; whether it was there.
    pub fn delete(&self, id: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.remove(id).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.by_id.len(), inner.order.len())
    }
}

impl Inner {
    /// Drops what is older than `ttl` (the oldest are at the front).
    fn expire(&mut self, ttl: Duration) {
        while let Some(oldest) = self.order.front() {
            match self.by_id.get(oldest) {
                Some(stored) if stored.stored.elapsed() < ttl => break,
                _ => {
                    let oldest = self.order.pop_front().expect("a front");
                    if let Some(stored) = self.by_id.get(&oldest) {
                        if stored.stored.elapsed() >= ttl {
                            self.by_id.remove(&oldest);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_oldest_go_first_and_the_store_never_grows_past_its_bound() {
        let store = ResponseStore::new(3, Duration::from_secs(60));
        for i in 0..1000 {
            store.put(format!("resp_{i}"), json!({"i": i}), Vec::new());
        }
        assert!(store.get("resp_996").is_none());
        assert_eq!(store.get("resp_999").unwrap().response["i"], 999);
        let (stored, order) = store.len();
        assert_eq!(stored, 3);
        assert!(order <= 6, "{order}");
        assert!(store.delete("resp_999") && !store.delete("resp_999"));
    }

    #[test]
    fn responses_older_than_the_ttl_are_gone() {
        let store = ResponseStore::new(10, Duration::from_millis(30));
        store.put("resp_a".into(), json!({}), Vec::new());
        assert!(store.get("resp_a").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.get("resp_a").is_none());
        assert_eq!(store.len(), (0, 0));
    }

    #[test]
    fn a_store_of_capacity_zero_keeps_nothing() {
        let store = ResponseStore::new(0, Duration::from_secs(60));
        store.put("resp_a".into(), json!({}), Vec::new());
        assert!(store.get("resp_a").is_none());
    }
}
