//! The OpenAI-compatible API: `POST /v1/chat/completions` (whole history through the model's chat
//! template, real token streaming, `n` choices, log probabilities), `POST /v1/completions` (a raw
//! prompt: text, token ids, fill-in-the-middle) and `GET /v1/models`, so that Open WebUI, the
//! OpenAI SDKs and evaluation harnesses work against the same engine as the Leafresh endpoints.
//! Every other path under `/v1/` answers in OpenAI's error shape.

mod chat;
mod completions;
pub mod logprobs;
mod messages;
pub mod request;
pub mod response;
mod tools;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use serde::de::DeserializeOwned;

use super::body::read_limited;
use super::error::OpenAiError;
use super::AppState;
use crate::engine::EngineError;
use crate::metrics::Outcome;

pub use chat::generation;
pub use messages::messages as chat_messages;
pub use tools::offered as offered_tools;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(v1(
        "/v1/chat/completions",
        web::post().to(chat::chat_completions),
    ))
    .service(v1(
        "/v1/completions",
        web::post().to(completions::completions),
    ))
    .service(v1("/v1/models", web::get().to(models)))
    .service(v1("/v1/embeddings", web::post().to(embeddings)))
    .route("/tokenize", web::post().to(tokenize));
}

/// A `/v1` resource: another method on its path is answered in OpenAI's error shape too.
pub fn v1(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(unknown_v1))
}

/// Every other path or method under `/v1/`: OpenAI's 404 body, which every OpenAI client reads
/// (not the Leafresh envelope of the rest of the service).
pub async fn unknown_v1(req: HttpRequest) -> HttpResponse {
    OpenAiError::not_found(&format!("{} {}", req.method(), req.path())).error_response()
}

/// `POST /v1/embeddings`: refused, saying why. The model served is a generative one; its hidden
/// states are no sentence embeddings (they need a pooling model trained for it), and vectors that
/// look right but rank texts badly would be worse than none.
async fn embeddings(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.authorize(&req) {
        return e.error_response();
    }
    OpenAiError::invalid(
        "model",
        "This server serves a generative model, not an embedding model: /v1/embeddings is not \
         supported. Use an embedding server (an embedding model in vLLM, llama-server \
         --embeddings, Ollama).",
    )
    .code("unsupported_endpoint")
    .error_response()
}

/// Checks the key and that the server takes requests, reads the body (at most
/// `--max-body-bytes`) and parses it.
pub(crate) async fn read_request<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T, OpenAiError> {
    state.authorize(req)?;
    if state.is_draining() {
        return Err(EngineError::ShuttingDown.into());
    }
    let body = read_limited(req, payload, state.max_body_bytes).await?;
    serde_json::from_slice(&body).map_err(|e| OpenAiError::from_json(&e))
}

/// A model the engine serves; before an upstream engine is reached, what it serves is not known:
/// not ready, not a wrong name.
pub fn check_model(state: &AppState, model: &str) -> Result<(), OpenAiError> {
    let models = state.engine.model_ids();
    if models.is_empty() {
        return Err(EngineError::NotReady.into());
    }
    if !models.iter().any(|m| m == model) {
        return Err(OpenAiError::model_not_found(model));
    }
    Ok(())
}

fn data<T: serde::Serialize>(value: &T) -> sse::Event {
    // These values are plain strings and numbers: serializing them cannot fail.
    sse::Data::new(serde_json::to_string(value).unwrap_or_else(|_| "{}".into())).into()
}

fn outcome_of(error: &OpenAiError) -> Outcome {
    Outcome::of_error_status(error.status.as_u16())
}

async fn models(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.authorize(&req) {
        return e.error_response();
    }
    let models: Vec<(String, usize)> = state
        .engine
        .model_ids()
        .into_iter()
        .map(|id| {
            let window = state.engine.context_window(Some(&id));
            (id, window)
        })
        .collect();
    HttpResponse::Ok().json(response::model_list(&models))
}

/// vLLM's `POST /tokenize` for chat messages: `{"model", "messages", "tools"}` -> `{"count",
/// "max_model_len"}`, so that a gateway in front of this service (upstream mode) counts prompts
/// exactly. Token ids are not listed.
async fn tokenize(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let counted = async {
        state.authorize(&req)?;
        let body = read_limited(&req, payload, state.max_body_bytes).await?;
        let request = messages::tokenize_messages(&body)?;
        let model = request.model.as_deref();
        let counted = state
            .engine
            .count_tokens(model, request.messages, request.tools)
            .await?;
        let window = state.engine.context_window(model);
        Ok::<_, OpenAiError>((counted.tokens, window))
    };
    match counted.await {
        Ok((count, window)) => HttpResponse::Ok().json(serde_json::json!({
            "count": count,
            "max_model_len": window,
        })),
        Err(e) => e.error_response(),
    }
}
