//! Thin actix handlers: validate, call the engine, frame events. `routes` is shared by `main` and
//! the tests so that both exercise the real routing.

pub mod error;
pub mod ops;
pub mod recommend;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use crate::engine::{EngineError, EngineHandle};
use crate::leafresh::SessionStore;
use crate::metrics::Metrics;
use error::LeafreshError;

/// What every handler can reach.
pub struct AppState {
    pub engine: EngineHandle,
    pub sessions: Arc<SessionStore>,
    pub metrics: Arc<Metrics>,
    /// Constrain Leafresh answers with the JSON grammar (off with `--no-grammar`).
    pub grammar: bool,
    /// Period of SSE comment frames (zero: none).
    pub sse_keepalive: Duration,
    /// Set once a stop signal arrived: new requests are refused, running ones finish.
    pub draining: AtomicBool,
}

impl AppState {
    /// New requests get 503 once the server is stopping.
    pub fn refuse_if_draining(&self) -> Result<(), LeafreshError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(LeafreshError::Engine(EngineError::ShuttingDown));
        }
        Ok(())
    }
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    recommend::routes(cfg);
    ops::routes(cfg);
}
