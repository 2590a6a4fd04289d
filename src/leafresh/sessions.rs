//! The conversation store: per `sessionId`, the category the last base-info call set and the
//! previous turns (both sides), bounded in sessions, turns and idle time.
//!
//! The original kept one unbounded history per process and only the assistant side of it, until
//! prompts overflowed the context window. Here every dimension has a bound: at most
//! `max_sessions` sessions (the least recently used is evicted), `MAX_TURNS` turns per session
//! (the oldest is dropped), and sessions idle for `idle_ttl` are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::categories::{self, Category};

/// Turns kept per session. The prompt builder trims further to fit the token budget.
pub const MAX_TURNS: usize = 20;

/// One exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The user message as it appeared in the prompt (see `prompt::free_text_request`), so that
    /// replaying it reproduces the earlier prompt byte for byte.
    pub user: String,
    /// The model's answer text.
    pub assistant: String,
}

/// Conversations by session id. Share it through an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct SessionStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: HashMap<String, Session>,
    max_sessions: usize,
    idle_ttl: Duration,
}

#[derive(Debug)]
struct Session {
    category: &'static Category,
    turns: VecDeque<Turn>,
    last_used: Instant,
}

impl SessionStore {
    /// A store of at most `max_sessions` sessions (0 stores nothing), each forgotten after
    /// `idle_ttl` without use.
    pub fn new(max_sessions: usize, idle_ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                max_sessions,
                idle_ttl,
            }),
        }
    }

    /// The session's category: the one the last base-info call set, else the default
    /// (제로웨이스트). Reading does not create a session.
    pub fn category(&self, id: &str) -> &'static Category {
        self.lock().category(id, Instant::now())
    }

    /// Sets the session's category (creating the session if needed).
    pub fn set_category(&self, id: &str, category: &'static Category) {
        self.lock().set_category(id, category, Instant::now());
    }

    /// The session's turns, oldest first (empty for an unknown session).
    pub fn history(&self, id: &str) -> Vec<Turn> {
        self.lock().history(id, Instant::now())
    }

    /// Appends a turn (creating the session if needed), dropping the oldest beyond `MAX_TURNS`.
    pub fn push_turn(&self, id: &str, turn: Turn) {
        self.lock().push_turn(id, turn, Instant::now());
    }

    /// Forgets the session (category and history); `true` if there was one.
    pub fn clear(&self, id: &str) -> bool {
        self.lock().clear(id, Instant::now())
    }

    /// Number of sessions held (idle ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a session half-written in a way that
        // matters (each method does one map operation), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The store's logic with the clock passed in, so tests control time.
impl Inner {
    fn is_expired(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_used) >= self.idle_ttl
    }

    /// The live session `id`, touched; an expired one is removed.
    fn get(&mut self, id: &str, now: Instant) -> Option<&mut Session> {
        let expired = self.sessions.get(id).map(|s| self.is_expired(s, now))?;
        if expired {
            self.sessions.remove(id);
            return None;
        }
        let session = self.sessions.get_mut(id)?;
        session.last_used = now;
        Some(session)
    }

    /// The session `id`, created if absent; making room first (expired sessions, then the least
    /// recently used). `None` only when the store holds nothing (`max_sessions == 0`).
    fn get_or_create(&mut self, id: &str, now: Instant) -> Option<&mut Session> {
        if self.max_sessions == 0 {
            return None;
        }
        if self.get(id, now).is_none() {
            if self.sessions.len() >= self.max_sessions {
                let ttl = self.idle_ttl;
                self.sessions
                    .retain(|_, s| now.saturating_duration_since(s.last_used) < ttl);
            }
            while self.sessions.len() >= self.max_sessions {
                let oldest = self
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k.clone())?;
                self.sessions.remove(&oldest);
            }
            self.sessions.insert(
                id.to_owned(),
                Session {
                    category: categories::default_category(),
                    turns: VecDeque::new(),
                    last_used: now,
                },
            );
        }
        self.get(id, now)
    }

    fn category(&mut self, id: &str, now: Instant) -> &'static Category {
        self.get(id, now)
            .map_or_else(categories::default_category, |s| s.category)
    }

    fn set_category(&mut self, id: &str, category: &'static Category, now: Instant) {
        if let Some(s) = self.get_or_create(id, now) {
            s.category = category;
        }
    }

    fn history(&mut self, id: &str, now: Instant) -> Vec<Turn> {
        self.get(id, now)
            .map(|s| s.turns.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push_turn(&mut self, id: &str, turn: Turn, now: Instant) {
        if let Some(s) = self.get_or_create(id, now) {
            s.turns.push_back(turn);
            while s.turns.len() > MAX_TURNS {
                s.turns.pop_front();
            }
        }
    }

    fn clear(&mut self, id: &str, now: Instant) -> bool {
        self.get(id, now).is_some() && self.sessions.remove(id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn turn(n: usize) -> Turn {
        Turn {
            user: format!("u{n}"),
            assistant: format!("a{n}"),
        }
    }

    fn inner(max: usize) -> Inner {
        Inner {
            sessions: HashMap::new(),
            max_sessions: max,
            idle_ttl: TTL,
        }
    }

    fn vegan() -> &'static Category {
        categories::by_label("비건").unwrap()
    }

    #[test]
    fn unknown_session_has_the_default_category_and_no_history() {
        let store = SessionStore::new(10, TTL);
        assert_eq!(store.category("nobody").code, "ZERO_WASTE");
        assert!(store.history("nobody").is_empty());
        assert!(!store.clear("nobody"));
        // Reads do not create sessions.
        assert!(store.is_empty());
    }

    #[test]
    fn category_and_turns_are_kept_per_session() {
        let store = SessionStore::new(10, TTL);
        store.set_category("a", vegan());
        store.push_turn("a", turn(1));
        store.push_turn("a", turn(2));
        store.push_turn("b", turn(9));
        assert_eq!(store.category("a").code, "VEGAN");
        assert_eq!(store.category("b").code, "ZERO_WASTE");
        assert_eq!(store.history("a"), [turn(1), turn(2)]);
        assert_eq!(store.history("b"), [turn(9)]);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn clear_forgets_category_and_history_of_that_session_only() {
        let store = SessionStore::new(10, TTL);
        store.set_category("a", vegan());
        store.push_turn("a", turn(1));
        store.push_turn("b", turn(2));
        assert!(store.clear("a"));
        assert!(!store.clear("a"));
        assert_eq!(store.category("a").code, "ZERO_WASTE");
        assert!(store.history("a").is_empty());
        assert_eq!(store.history("b"), [turn(2)]);
    }

    #[test]
    fn turns_are_capped_dropping_the_oldest() {
        let store = SessionStore::new(10, TTL);
        for n in 0..MAX_TURNS + 5 {
            store.push_turn("a", turn(n));
        }
        let history = store.history("a");
        assert_eq!(history.len(), MAX_TURNS);
        assert_eq!(history[0], turn(5));
        assert_eq!(history[MAX_TURNS - 1], turn(MAX_TURNS + 4));
    }

    #[test]
    fn full_store_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut store = inner(2);
        store.push_turn("a", turn(1), at(0));
        store.push_turn("b", turn(2), at(1));
        // Reading "a" makes "b" the least recently used.
        assert_eq!(store.history("a", at(2)), [turn(1)]);
        store.push_turn("c", turn(3), at(3));
        assert_eq!(store.sessions.len(), 2);
        assert!(store.history("b", at(4)).is_empty());
        assert_eq!(store.history("a", at(4)), [turn(1)]);
        assert_eq!(store.history("c", at(4)), [turn(3)]);
    }

    #[test]
    fn idle_sessions_expire_on_access() {
        let t0 = Instant::now();
        let mut store = inner(10);
        store.set_category("a", vegan(), t0);
        store.push_turn("a", turn(1), t0);
        // Just before the TTL it is alive, and the access renews it.
        let almost = t0 + TTL - Duration::from_secs(1);
        assert_eq!(store.category("a", almost).code, "VEGAN");
        assert_eq!(
            store
                .category("a", almost + TTL - Duration::from_secs(1))
                .code,
            "VEGAN"
        );
        // Idle for a whole TTL: gone, and removed from the map.
        let later = almost + TTL - Duration::from_secs(1) + TTL;
        assert_eq!(store.category("a", later).code, "ZERO_WASTE");
        assert!(store.sessions.is_empty());
        assert!(store.history("a", later).is_empty());
        assert!(!store.clear("a", later));
    }

    #[test]
    fn a_full_store_drops_expired_sessions_before_live_ones() {
        let t0 = Instant::now();
        let mut store = inner(2);
        store.push_turn("old", turn(1), t0);
        store.push_turn("live", turn(2), t0 + TTL);
        store.push_turn("new", turn(3), t0 + TTL + Duration::from_secs(1));
        let now = t0 + TTL + Duration::from_secs(2);
        assert_eq!(store.history("live", now), [turn(2)]);
        assert_eq!(store.history("new", now), [turn(3)]);
        assert!(store.history("old", now).is_empty());
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let store = SessionStore::new(0, TTL);
        store.set_category("a", vegan());
        store.push_turn("a", turn(1));
        assert!(store.is_empty());
        assert_eq!(store.category("a").code, "ZERO_WASTE");
    }

    #[test]
    fn store_is_shareable_across_threads() {
        let store = std::sync::Arc::new(SessionStore::new(100, TTL));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..10 {
                        store.push_turn(&format!("s{t}"), turn(n));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(store.len(), 4);
        assert_eq!(store.history("s2").len(), 10);
    }
}
