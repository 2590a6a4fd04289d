//! The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`), what
//! Claude Code and the Anthropic SDKs speak: an adapter over the same engine seam and the same
//! `/v1` flow as OpenAI's chat (the conversation fitted, tools dropped when they leave no room),
//! with Anthropic's content blocks, its event stream and its error shape. The key comes as
//! `x-api-key` (or a bearer token).

mod request;
mod response;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_lab::sse;
use serde_json::json;

use crate::chat_completions;
use crate::engine::{EngineError, Generation, GenerationEvents};
use crate::http::answers::{gather, Answer};
use crate::http::body::read_limited;
use crate::http::error::{OpenAiError, RETRY_AFTER_SECONDS};
use crate::http::{openai, stream, AppState};
use crate::metrics::{Outcome, RequestRecord};
use request::{MessagesRequest, ValidMessages};
use response::{Message, StreamWriter};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "messages";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/messages")
            .route(web::post().to(messages))
            .default_service(web::to(unknown)),
    )
    .service(
        web::resource("/v1/messages/count_tokens")
            .route(web::post().to(count_tokens))
            .default_service(web::to(unknown)),
    );
}

/// An Anthropic error response: `{"type": "error", "error": {"type", "message"}}`, its type
/// chosen by the status (a busy server is Anthropic's `overloaded_error`, with `Retry-After`).
fn error_response(error: &OpenAiError) -> HttpResponse {
    let kind = match error.status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    };
    let mut response = HttpResponse::build(error.status);
    if error.status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
    }
    response.json(json!({
        "type": "error",
        "error": {"type": kind, "message": error.message},
    }))
}

async fn unknown(req: HttpRequest) -> HttpResponse {
    error_response(&OpenAiError::not_found(&format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}

/// Checks the key and that the server takes requests, reads and validates the body.
async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    count_only: bool,
) -> Result<ValidMessages, OpenAiError> {
    state.authorize(req)?;
    if state.is_draining() {
        return Err(EngineError::ShuttingDown.into());
    }
    let body = read_limited(req, payload, state.max_body_bytes).await?;
    let request: MessagesRequest =
        serde_json::from_slice(&body).map_err(|e| OpenAiError::from_json(&e))?;
    let valid = request.validate(count_only)?;
    openai::check_model(state, &valid.model)?;
    Ok(valid)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens"}` of the conversation with its tools.
async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let counted = async {
        let valid = read(&req, payload, &state, true).await?;
        let counted = state
            .engine
            .count_tokens(Some(&valid.model), valid.messages, valid.tools)
            .await?;
        Ok::<_, OpenAiError>(counted.tokens)
    };
    match counted.await {
        Ok(tokens) => HttpResponse::Ok().json(json!({"input_tokens": tokens})),
        Err(e) => error_response(&e),
    }
}

async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut record = state.metrics.begin(ENDPOINT);
    let started = async {
        let valid = read(&req, payload, &state, false).await?;
        let generation = Generation {
            messages: valid.messages.clone(),
            sampling: valid.sampling.clone(),
            max_tokens: valid.max_tokens,
            stop: valid.stop.clone(),
            model: Some(valid.model.clone()),
            tools: valid.tools.clone(),
            ..Generation::default()
        };
        let started =
            chat_completions::start(&*state.engine, state.context_overflow, generation, 1).await?;
        Ok::<_, OpenAiError>((valid, started))
    };
    let (valid, mut started) = match started.await {
        Ok(started) => started,
        Err(e) => {
            record.finish(Outcome::of_error_status(e.status.as_u16()), None);
            return error_response(&e);
        }
    };
    record.messages_dropped(started.messages_dropped);
    record.tools_dropped(started.tools_dropped);
    let message = Message::new(valid.model.clone(), started.prompt_tokens);
    let events = started.choices.remove(0);
    if valid.stream {
        return stream_message(&state, record, message, events, &req);
    }
    match gather(vec![events]).await {
        Ok(mut answers) => {
            let (answer, summary) = answers.remove(0);
            record.finish(Outcome::Ok, Some(&summary));
            HttpResponse::Ok().json(message.whole(&answer, &summary))
        }
        Err(e) => {
            let e = OpenAiError::from(e);
            record.finish(Outcome::of_error_status(e.status.as_u16()), None);
            error_response(&e)
        }
    }
}

/// Streams Anthropic's events: `message_start`, a `ping`, each content block's
/// `content_block_start`, deltas and `content_block_stop`, then `message_delta` (the stop reason
/// and the usage) and `message_stop`; a failure after the start is an `error` event.
fn stream_message(
    state: &AppState,
    record: RequestRecord,
    message: Message,
    mut events: GenerationEvents,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        let mut writer = StreamWriter::new(message);
        let mut answer = Answer::default();
        let opening = writer.open();
        for event in opening {
            if !stream::deliver(&tx, event).await {
                record.finish(Outcome::Cancelled, None);
                return;
            }
        }
        let outcome = loop {
            let Some(event) = stream::unless_client_gone(&tx, events.recv()).await else {
                record.finish(Outcome::Cancelled, None);
                return;
            };
            let Some(event) = event else {
                break Err(OpenAiError::from(EngineError::Stopped));
            };
            let frames = writer.frames(&event);
            if let Some(outcome) = answer.take(event) {
                break outcome.map_err(OpenAiError::from);
            }
            for frame in frames {
                if !stream::deliver(&tx, frame).await {
                    record.finish(Outcome::Cancelled, None);
                    return;
                }
            }
        };
        // In flight until the last event is sent: a stop waits for it.
        let (closing, _in_flight): (Vec<sse::Event>, _) = match outcome {
            Ok(summary) => {
                let in_flight = record.finish(Outcome::Ok, Some(&summary));
                (writer.close(&summary), in_flight)
            }
            Err(e) => {
                let in_flight = record.finish(Outcome::of_error_status(e.status.as_u16()), None);
                (vec![writer.error(&e)], in_flight)
            }
        };
        for event in closing {
            stream::deliver(&tx, event).await;
        }
    });
    stream::response(rx, state.sse_keepalive, req)
}
