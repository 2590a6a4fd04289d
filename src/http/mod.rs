//! Thin actix handlers: validate, call the engine, frame events. `routes` is shared by `main` and
//! the tests so that both exercise the real routing.

pub mod error;
pub mod ops;
pub mod recommend;

use std::sync::Arc;

use actix_web::web;

use crate::engine::EngineHandle;
use crate::leafresh::SessionStore;

/// What every handler can reach.
pub struct AppState {
    pub engine: EngineHandle,
    pub sessions: Arc<SessionStore>,
    /// Constrain Leafresh answers with the JSON grammar (off with `--no-grammar`).
    pub grammar: bool,
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    recommend::routes(cfg);
    ops::routes(cfg);
}
