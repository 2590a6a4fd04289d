//! The OpenAI-compatible API: `POST /v1/chat/completions` (whole history through the model's chat
//! template, real token streaming) and `GET /v1/models`, so that OpenWebUI and the OpenAI SDKs
//! work against the same engine as the Leafresh endpoints.

pub mod request;
mod response;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use tokio::sync::mpsc;

use super::body::read_limited;
use super::error::OpenAiError;
use super::{stream, AppState};
use crate::engine::{
    budget, EngineError, GenerationEvent, GenerationRequest, GenerationSummary, SamplingParams,
};
use crate::metrics::{Outcome, RequestRecord};
use request::{ChatRequest, OutputFormat, ValidChatRequest};
use response::{Completion, CompletionMeta};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "chat-completions";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/v1/models", web::get().to(models));
}

async fn models(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.authorize(&req) {
        return e.error_response();
    }
    HttpResponse::Ok().json(response::model_list(&state.model_ids))
}

async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let record = state.metrics.begin(ENDPOINT);
    match accept(&req, payload, &state).await {
        Ok(Started::Stream(meta, include_usage, events)) => {
            stream(&state, record, meta, include_usage, events, &req)
        }
        Ok(Started::Whole(meta, events)) => match collect(meta, events).await {
            Ok((completion, summary)) => {
                record.finish(Outcome::Ok, Some(&summary));
                HttpResponse::Ok().json(completion)
            }
            Err(e) => {
                record.finish(outcome_of(&e), None);
                e.error_response()
            }
        },
        Err(e) => {
            record.finish(outcome_of(&e), None);
            e.error_response()
        }
    }
}

/// An accepted request: to be streamed (with or without the usage chunk) or sent whole.
enum Started {
    Stream(CompletionMeta, bool, mpsc::Receiver<GenerationEvent>),
    Whole(CompletionMeta, mpsc::Receiver<GenerationEvent>),
}

/// Checks the key and that the server takes requests before reading the body (at most
/// `--max-body-bytes`), then starts the request.
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Started, OpenAiError> {
    state.authorize(req)?;
    if state.is_draining() {
        return Err(EngineError::ShuttingDown.into());
    }
    let body = read_limited(req, payload, state.max_body_bytes).await?;
    start(&body, state)
}

fn start(body: &[u8], state: &AppState) -> Result<Started, OpenAiError> {
    let request: ChatRequest =
        serde_json::from_slice(body).map_err(|e| OpenAiError::from_json(&e))?;
    let valid = request.validate()?;
    if !state.model_ids.contains(&valid.model) {
        return Err(OpenAiError::model_not_found(&valid.model));
    }
    let generation = plan(state, &valid)?;
    let events = state.engine.submit(generation)?;
    let meta = CompletionMeta::new(valid.model.clone());
    if valid.stream {
        Ok(Started::Stream(meta, valid.include_usage, events))
    } else {
        Ok(Started::Whole(meta, events))
    }
}

/// Tokenizes the conversation and turns the parameters into a generation request.
fn plan(state: &AppState, valid: &ValidChatRequest) -> Result<GenerationRequest, OpenAiError> {
    let prompt = state
        .engine
        .model()
        .prompt_within(&valid.messages, state.engine.slot_context())?;
    // Without max_tokens a request may use all the room its slot has left.
    let requested = valid.max_tokens.unwrap_or(usize::MAX);
    let max_new_tokens =
        budget::max_new_tokens(prompt.len(), requested, state.engine.slot_context())?;
    let grammar = match &valid.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(schema_grammar(state, r#"{"type": "object"}"#)?),
        OutputFormat::JsonSchema(schema) => Some(schema_grammar(state, &schema.to_string())?),
    };
    Ok(GenerationRequest {
        prompt,
        max_new_tokens,
        sampling: SamplingParams {
            temperature: valid.temperature,
            top_p: valid.top_p,
            top_k: valid.top_k,
            min_p: valid.min_p,
            repeat_penalty: valid.repeat_penalty,
            frequency_penalty: valid.frequency_penalty,
            presence_penalty: valid.presence_penalty,
            seed: valid.seed,
            grammar,
        },
        stop: valid.stop.clone(),
    })
}

/// A JSON schema as a llama.cpp grammar (llama.cpp's own converter), compiled once here so that
/// a schema llama.cpp cannot use is refused before anything is streamed.
fn schema_grammar(state: &AppState, schema: &str) -> Result<String, OpenAiError> {
    let refused = || {
        OpenAiError::invalid(
            "response_format.json_schema.schema",
            "the JSON schema could not be turned into a grammar (unsupported or invalid schema)",
        )
    };
    let grammar = llama_cpp_2::json_schema_to_grammar(schema).map_err(|_| refused())?;
    state
        .engine
        .model()
        .check_grammar(&grammar)
        .map_err(|_| refused())?;
    Ok(grammar)
}

/// Waits for the whole answer (non-streaming requests).
async fn collect(
    meta: CompletionMeta,
    mut events: mpsc::Receiver<GenerationEvent>,
) -> Result<(Completion, GenerationSummary), OpenAiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Done(summary) => {
                return Ok((meta.completion(text, &summary), summary));
            }
            GenerationEvent::Failed(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Stopped.into())
}

/// Streams `chat.completion.chunk`s as tokens arrive, then `[DONE]`.
fn stream(
    state: &AppState,
    record: RequestRecord,
    meta: CompletionMeta,
    include_usage: bool,
    mut events: mpsc::Receiver<GenerationEvent>,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        if !stream::deliver(&tx, data(&meta.role_chunk())).await {
            record.finish(Outcome::Cancelled, None);
            return;
        }
        let outcome = loop {
            let event = match stream::next(&mut events, &tx).await {
                stream::Next::Event(event) => Some(event),
                stream::Next::EngineGone => None,
                stream::Next::ClientGone => {
                    record.finish(Outcome::Cancelled, None);
                    return;
                }
            };
            match event {
                Some(GenerationEvent::Text(piece)) => {
                    if !stream::deliver(&tx, data(&meta.content_chunk(piece))).await {
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                Some(GenerationEvent::Done(summary)) => break Ok(summary),
                Some(GenerationEvent::Failed(e)) => break Err(OpenAiError::from(e)),
                None => break Err(OpenAiError::from(EngineError::Stopped)),
            }
        };
        match outcome {
            Ok(summary) => {
                record.finish(Outcome::Ok, Some(&summary));
                stream::deliver(&tx, data(&meta.finish_chunk(&summary))).await;
                if include_usage {
                    stream::deliver(&tx, data(&meta.usage_chunk(&summary))).await;
                }
            }
            Err(e) => {
                record.finish(outcome_of(&e), None);
                // After the stream began the status line is sent: the error becomes a chunk.
                stream::deliver(&tx, data(&e.body())).await;
            }
        }
        stream::deliver(&tx, sse::Data::new("[DONE]").into()).await;
    });
    stream::response(rx, state.sse_keepalive, req)
}

fn data<T: serde::Serialize>(value: &T) -> sse::Event {
    // These values are plain strings and numbers: serializing them cannot fail.
    sse::Data::new(serde_json::to_string(value).unwrap_or_else(|_| "{}".into())).into()
}

fn outcome_of(error: &OpenAiError) -> Outcome {
    match error.status.as_u16() {
        503 => Outcome::Unavailable,
        500..=599 => Outcome::Error,
        _ => Outcome::Rejected,
    }
}
