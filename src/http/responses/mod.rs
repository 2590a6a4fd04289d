//! The OpenAI Responses API (`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`), what
//! OpenAI's current SDKs and the Agents SDK use by default: an adapter over the same engine seam
//! and the same `/v1` flow as chat completions, stateless or stateful. A stored response keeps
//! its conversation ([`store::ResponseStore`]); `previous_response_id` continues it, and the
//! engine finds that conversation's cells cached, as for a chat follow-up.

mod request;
mod response;
pub mod store;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;

use crate::chat_completions;
use crate::engine::{ChatMessage, Generation, GenerationEvents};
use crate::http::answers::{gather, Answer};
use crate::http::error::OpenAiError;
use crate::http::openai::{check_model, read_request, v1};
use crate::http::{stream, AppState};
use crate::metrics::{Outcome, RequestRecord};
use request::{ResponsesRequest, ValidResponses};
use response::{output_message, ResponseMeta, StreamWriter};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "responses";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(v1("/v1/responses", web::post().to(create)))
        .service(
            web::resource("/v1/responses/{id}")
                .route(web::get().to(retrieve))
                .route(web::delete().to(delete))
                .default_service(web::to(crate::http::openai::unknown_v1)),
        );
}

fn missing(id: &str) -> OpenAiError {
    let named = id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    OpenAiError::missing(
        "previous_response_id",
        if named {
            format!("Response with id '{id}' not found.")
        } else {
            "Response not found.".into()
        },
    )
}

/// `GET /v1/responses/{id}`: a stored response.
async fn retrieve(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(e) = state.authorize(&req) {
        return e.error_response();
    }
    match state.responses.get(&id) {
        Some(stored) => HttpResponse::Ok().json(stored.response),
        None => missing(&id).error_response(),
    }
}

/// `DELETE /v1/responses/{id}`.
async fn delete(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(e) = state.authorize(&req) {
        return e.error_response();
    }
    if state.responses.delete(&id) {
        HttpResponse::Ok()
            .json(serde_json::json!({"id": *id, "object": "response", "deleted": true}))
    } else {
        missing(&id).error_response()
    }
}

/// An accepted request: what it continues and asks, and its events.
struct Started {
    valid: ValidResponses,
    /// The whole conversation sent (the stored one, then this input), to store with the output.
    conversation: Vec<ChatMessage>,
    events: GenerationEvents,
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut record = state.metrics.begin(ENDPOINT);
    let started = accept(&req, payload, &state, &mut record).await;
    let started = match started {
        Ok(started) => started,
        Err(e) => {
            record.finish(Outcome::of_error_status(e.status.as_u16()), None);
            return e.error_response();
        }
    };
    let meta = ResponseMeta::new(&started.valid);
    if started.valid.stream {
        return stream_response(&state, record, meta, started, &req);
    }
    match gather(vec![started.events]).await {
        Ok(mut answers) => {
            let (answer, summary) = answers.remove(0);
            record.finish(Outcome::Ok, Some(&summary));
            let response = meta.whole(&answer, &summary);
            keep(
                &state,
                &started.valid,
                &meta,
                &response,
                started.conversation,
                &answer,
            );
            HttpResponse::Ok().json(response)
        }
        Err(e) => {
            let e = OpenAiError::from(e);
            record.finish(Outcome::of_error_status(e.status.as_u16()), None);
            e.error_response()
        }
    }
}

/// Reads and validates the request, puts the stored conversation before its input, fits and
/// submits it.
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    record: &mut RequestRecord,
) -> Result<Started, OpenAiError> {
    let request: ResponsesRequest = read_request(req, payload, state).await?;
    let valid = request.validate()?;
    check_model(state, &valid.model)?;
    let mut conversation = match &valid.previous_response_id {
        Some(id) => {
            state
                .responses
                .get(id)
                .ok_or_else(|| missing(id))?
                .conversation
        }
        None => Vec::new(),
    };
    conversation.extend(valid.input.iter().cloned());
    // `instructions` are this request's alone (a previous response's are not carried over).
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(instructions) = &valid.instructions {
        messages.push(ChatMessage::system(instructions.clone()));
    }
    messages.extend(conversation.iter().cloned());
    let max_tokens = valid.max_output_tokens.unwrap_or(state.default_max_tokens);
    let generation = Generation {
        messages,
        sampling: valid.sampling.clone(),
        constraint: valid.format.clone(),
        max_tokens: Some(max_tokens),
        model: Some(valid.model.clone()),
        tools: valid.tools.clone(),
        ..Generation::default()
    };
    let mut started =
        chat_completions::start(&*state.engine, state.context_overflow, generation, 1).await?;
    record.messages_dropped(started.messages_dropped);
    record.tools_dropped(started.tools_dropped);
    Ok(Started {
        valid,
        conversation,
        events: started.choices.remove(0),
    })
}

/// Stores a response with the conversation it ends, unless the request said `store: false`.
fn keep(
    state: &AppState,
    valid: &ValidResponses,
    meta: &ResponseMeta,
    response: &serde_json::Value,
    mut conversation: Vec<ChatMessage>,
    answer: &Answer,
) {
    if valid.store {
        conversation.push(output_message(answer));
        state
            .responses
            .put(meta.id.clone(), response.clone(), conversation);
    }
}

/// Streams the Responses events as the answer arrives; the response is stored at its end.
fn stream_response(
    state: &web::Data<AppState>,
    record: RequestRecord,
    meta: ResponseMeta,
    started: Started,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    let state = state.clone();
    let keepalive = state.sse_keepalive;
    actix_web::rt::spawn(async move {
        let Started {
            valid,
            conversation,
            events,
        } = started;
        let mut writer = StreamWriter::new(&meta);
        let mut answer = Answer::default();
        for event in writer.open() {
            if !stream::deliver(&tx, event).await {
                record.finish(Outcome::Cancelled, None);
                return;
            }
        }
        let mut events = crate::http::answers::merged(vec![events]);
        let outcome = loop {
            let Some(next) = stream::unless_client_gone(&tx, events.next()).await else {
                record.finish(Outcome::Cancelled, None);
                return;
            };
            let Some((_, event)) = next else {
                break Err(OpenAiError::from(crate::engine::EngineError::Stopped));
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
        let (frames, _in_flight) = match outcome {
            Ok(summary) => {
                let in_flight = record.finish(Outcome::Ok, Some(&summary));
                let (frames, response) = writer.close(&summary);
                keep(&state, &valid, &meta, &response, conversation, &answer);
                (frames, in_flight)
            }
            Err(e) => {
                let in_flight = record.finish(Outcome::of_error_status(e.status.as_u16()), None);
                (vec![writer.fail(&e)], in_flight)
            }
        };
        for frame in frames {
            stream::deliver(&tx, frame).await;
        }
    });
    stream::response(rx, keepalive, req)
}
