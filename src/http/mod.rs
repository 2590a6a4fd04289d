//! Thin actix handlers: validate, call the engine, frame events. [`app`] builds the application
//! for `main` and for in-process handler tests alike.

pub mod answers;
pub mod anthropic;
pub mod body;
pub mod error;
pub mod openai;
pub mod ops;
pub mod recommend;
pub mod responses;
pub mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Condition;
use actix_web::{web, App, HttpRequest};
use subtle::ConstantTimeEq;

use crate::config::{Config, ContextOverflow};
use crate::engine::{Engine, EngineError};
use crate::leafresh::{Recommender, SessionStore};
use crate::metrics::Metrics;
use error::{LeafreshError, OpenAiError};

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<dyn Engine>,
    /// The Leafresh recommendation flow, on the same engine.
    pub recommender: Recommender,
    pub sessions: Arc<SessionStore>,
    pub metrics: Arc<Metrics>,
    /// Period of SSE comment frames (zero: none).
    pub sse_keepalive: Duration,
    /// Largest request body read (`/v1/chat/completions`).
    pub max_body_bytes: usize,
    /// What `/v1` does with a conversation longer than the context window.
    pub context_overflow: ContextOverflow,
    /// `/v1`'s answer limit when the client sets none.
    pub default_max_tokens: usize,
    /// Set once a stop signal arrived: new requests are refused, running ones finish.
    pub draining: AtomicBool,
    /// Responses API responses kept for `previous_response_id`.
    pub responses: responses::store::ResponseStore,
    /// When set, `/v1/*` (and with `api_key_leafresh` the Leafresh endpoints) need this bearer key.
    pub api_key: Option<String>,
    pub api_key_leafresh: bool,
}

impl AppState {
    /// The state the settings describe, around a started engine.
    pub fn new(engine: Arc<dyn Engine>, config: &Config) -> Self {
        let sessions = Arc::new(SessionStore::new(
            config.max_sessions as usize,
            config.session_ttl(),
        ));
        Self {
            recommender: Recommender::new(
                Arc::clone(&engine),
                Arc::clone(&sessions),
                !config.no_grammar,
            ),
            metrics: Arc::new(Metrics::new(engine.stats().engine)),
            engine,
            sessions,
            sse_keepalive: config.sse_keepalive(),
            max_body_bytes: config.max_body_bytes as usize,
            context_overflow: config.context_overflow,
            default_max_tokens: config.default_max_tokens as usize,
            draining: AtomicBool::new(false),
            responses: responses::store::ResponseStore::new(
                config.responses_stored as usize,
                Duration::from_secs(config.responses_ttl),
            ),
            api_key: config.api_key.clone(),
            api_key_leafresh: config.api_key_leafresh,
        }
    }

    pub fn is_draining(&self) -> bool {
        // SeqCst, as the in-flight count (`Metrics::begin`): a request that began either sees the
        // stop, or the stop counts it.
        self.draining.load(Ordering::SeqCst)
    }

    /// New requests get 503 once the server is stopping.
    pub fn refuse_if_draining(&self) -> Result<(), LeafreshError> {
        if self.is_draining() {
            return Err(EngineError::ShuttingDown.into());
        }
        Ok(())
    }

    /// Checks the bearer key of an OpenAI API request (when a key is configured).
    pub fn authorize(&self, req: &HttpRequest) -> Result<(), OpenAiError> {
        if self.key_matches(req) {
            Ok(())
        } else {
            Err(OpenAiError::unauthorized())
        }
    }

    /// The same check for the Leafresh endpoints, which need a key only with `--api-key-leafresh`.
    pub fn authorize_leafresh(&self, req: &HttpRequest) -> Result<(), LeafreshError> {
        if !self.api_key_leafresh || self.key_matches(req) {
            Ok(())
        } else {
            Err(LeafreshError::Unauthorized)
        }
    }

    /// The key as OpenAI clients send it (`Authorization: Bearer KEY`) or as Anthropic's do
    /// (`x-api-key: KEY`). Compared in constant time, so that response timing does not reveal
    /// the key.
    fn key_matches(&self, req: &HttpRequest) -> bool {
        let Some(expected) = &self.api_key else {
            return true;
        };
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header(AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
        [bearer, header("x-api-key")]
            .into_iter()
            .flatten()
            .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// CORS: none by default (the test page is same-origin, and a CORS layer with no origins would
/// refuse the `Origin` header browsers send on same-origin POSTs); the listed origins, or any
/// with `*`.
pub fn cors(origins: &[String]) -> Condition<actix_cors::Cors> {
    Condition::new(!origins.is_empty(), cors_layer(origins))
}

fn cors_layer(origins: &[String]) -> actix_cors::Cors {
    let cors = actix_cors::Cors::default()
        .allow_any_method()
        .allow_any_header()
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin.trim()))
}

/// The application: CORS, the shared state and every route. `main` serves it; handler tests
/// build the same one in-process (`actix_web::test::init_service(http::app(state, &[]))`).
pub fn app(
    state: web::Data<AppState>,
    cors_origins: &[String],
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(cors(cors_origins))
        .app_data(state)
        .configure(routes)
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    recommend::routes(cfg);
    openai::routes(cfg);
    responses::routes(cfg);
    anthropic::routes(cfg);
    ops::routes(cfg);
}
