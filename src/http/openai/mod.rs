//! The OpenAI-compatible API: `POST /v1/chat/completions` (whole history through the model's chat
//! template, real token streaming) and `GET /v1/models`, so that OpenWebUI and the OpenAI SDKs
//! work against the same engine as the Leafresh endpoints.

mod messages;
pub mod request;
mod response;
mod tools;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;

use super::body::read_limited;
use super::error::OpenAiError;
use super::{stream, AppState};
use crate::chat_completions;
use crate::engine::{
    EngineError, Generation, GenerationEvent, GenerationEvents, GenerationSummary,
    OutputConstraint, SamplingParams, ToolCall,
};
use crate::metrics::{Outcome, RequestRecord};
use request::{ChatRequest, OutputFormat, ValidChatRequest};
use response::{Completion, CompletionMeta};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "chat-completions";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/v1/models", web::get().to(models))
        .route("/tokenize", web::post().to(tokenize));
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

async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut record = state.metrics.begin(ENDPOINT);
    let started = accept(&req, payload, &state).await;
    if let Ok(Started::Stream(meta, ..) | Started::Whole(meta, _)) = &started {
        record.messages_dropped(meta.messages_dropped);
        record.tools_dropped(meta.tools_dropped);
    }
    match started {
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
    Stream(CompletionMeta, bool, GenerationEvents),
    Whole(CompletionMeta, GenerationEvents),
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
    let request: ChatRequest =
        serde_json::from_slice(&body).map_err(|e| OpenAiError::from_json(&e))?;
    let valid = request.validate()?;
    let models = state.engine.model_ids();
    if models.is_empty() {
        // An upstream not reached yet: what it serves is not known, not a wrong name.
        return Err(EngineError::NotReady.into());
    }
    if !models.contains(&valid.model) {
        return Err(OpenAiError::model_not_found(&valid.model));
    }
    // Without max_tokens a reply could fill its whole slot, and the next turn would not fit.
    let max_tokens = valid.max_tokens.unwrap_or(state.default_max_tokens);
    let started = chat_completions::start(
        &*state.engine,
        state.context_overflow,
        generation(&valid, max_tokens),
    )
    .await?;
    let meta = CompletionMeta::new(
        valid.model.clone(),
        started.messages_dropped,
        started.tools_dropped,
    );
    if valid.stream {
        Ok(Started::Stream(meta, valid.include_usage, started.events))
    } else {
        Ok(Started::Whole(meta, started.events))
    }
}

/// The request as the engine takes it: the whole conversation (the chat-completions flow fits
/// it), at most `max_tokens` new tokens (the room the context leaves caps it further).
fn generation(valid: &ValidChatRequest, max_tokens: usize) -> Generation {
    let constraint = match &valid.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(r#"{"type": "object"}"#.to_owned()),
        OutputFormat::JsonSchema(schema) => Some(schema.to_string()),
    };
    Generation {
        messages: valid.messages.clone(),
        sampling: SamplingParams {
            temperature: valid.temperature,
            top_p: valid.top_p,
            top_k: valid.top_k,
            min_p: valid.min_p,
            repeat_penalty: valid.repeat_penalty,
            frequency_penalty: valid.frequency_penalty,
            presence_penalty: valid.presence_penalty,
            seed: valid.seed,
            logit_bias: valid.logit_bias.clone(),
        },
        constraint: constraint.map(OutputConstraint::JsonSchema),
        max_tokens: Some(max_tokens),
        stop: valid.stop.clone(),
        model: Some(valid.model.clone()),
        session: None,
        tools: valid.tools.clone(),
        counted: None,
    }
}

/// Waits for the whole answer (non-streaming requests).
async fn collect(
    meta: CompletionMeta,
    mut events: GenerationEvents,
) -> Result<(Completion, GenerationSummary), OpenAiError> {
    let mut text = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::ToolCall { index, id, name } => {
                if index == calls.len() {
                    calls.push(ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    });
                }
            }
            GenerationEvent::ToolArguments { index, fragment } => {
                if let Some(call) = calls.get_mut(index) {
                    call.arguments.push_str(&fragment);
                }
            }
            GenerationEvent::Done(summary) => {
                return Ok((meta.completion(text, calls, &summary), summary));
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
    mut events: GenerationEvents,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        if !stream::deliver(&tx, data(&meta.role_chunk())).await {
            record.finish(Outcome::Cancelled, None);
            return;
        }
        let outcome = loop {
            let Some(event) = stream::unless_client_gone(&tx, events.recv()).await else {
                // Dropping `events` makes the engine drop this request.
                record.finish(Outcome::Cancelled, None);
                return;
            };
            match event {
                Some(GenerationEvent::Text(piece)) => {
                    if !stream::deliver(&tx, data(&meta.content_chunk(piece))).await {
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                Some(GenerationEvent::ToolCall { index, id, name }) => {
                    if !stream::deliver(&tx, data(&meta.tool_call_chunk(index, &id, &name))).await {
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                Some(GenerationEvent::ToolArguments { index, fragment }) => {
                    if !stream::deliver(&tx, data(&meta.arguments_chunk(index, fragment))).await {
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                Some(GenerationEvent::Done(summary)) => break Ok(summary),
                Some(GenerationEvent::Failed(e)) => break Err(OpenAiError::from(e)),
                None => break Err(OpenAiError::from(EngineError::Stopped)),
            }
        };
        // In flight until `[DONE]` is sent: a stop waits for it.
        let _in_flight = match outcome {
            Ok(summary) => {
                let in_flight = record.finish(Outcome::Ok, Some(&summary));
                stream::deliver(&tx, data(&meta.finish_chunk(&summary))).await;
                if include_usage {
                    stream::deliver(&tx, data(&meta.usage_chunk(&summary))).await;
                }
                in_flight
            }
            Err(e) => {
                let in_flight = record.finish(outcome_of(&e), None);
                // After the stream began the status line is sent: the error becomes a chunk.
                stream::deliver(&tx, data(&e.body())).await;
                in_flight
            }
        };
        stream::deliver(&tx, sse::Data::new("[DONE]").into()).await;
    });
    stream::response(rx, state.sse_keepalive, req)
}

fn data<T: serde::Serialize>(value: &T) -> sse::Event {
    // These values are plain strings and numbers: serializing them cannot fail.
    sse::Data::new(serde_json::to_string(value).unwrap_or_else(|_| "{}".into())).into()
}

fn outcome_of(error: &OpenAiError) -> Outcome {
    Outcome::of_error_status(error.status.as_u16())
}
