//! The Leafresh recommendation endpoints: base-info, free-text and clear-conversation.
//! Thin: decode and validate the query, build the prompt (domain), submit it (engine), and frame
//! what comes back as `challenge` events and one final `close` or `error` event.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{Envelope, LeafreshError};
use super::{stream, AppState};
use crate::engine::{
    budget, EngineError, GenerationEvent, GenerationRequest, Prompt, SamplingParams,
};
use crate::leafresh::prompt::{base_info_request, free_text_request};
use crate::leafresh::{
    answer_grammar, base_info_messages, constants, default_category, free_text_messages,
    parse_answer, parse_query, validate_base_info, validate_free_text, validate_session_id,
    AnswerBounds, Category, FragmentExtractor, GenerationDefaults, Rejection, Turn,
};
use crate::metrics::{Outcome, RequestRecord};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ai/chatbot/recommendation/base-info",
        web::get().to(base_info),
    )
    .route(
        "/ai/chatbot/recommendation/free-text",
        web::get().to(free_text),
    )
    .route(
        "/ai/chatbot/clear-conversation",
        web::post().to(clear_conversation),
    );
}

/// Validation errors answer plain JSON before any stream starts.
async fn base_info(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let record = state.metrics.begin("base-info");
    match prepare_base_info(&req, &state) {
        Ok((events, category, on_answer)) => {
            stream_answer(&state, record, events, category, on_answer, &req)
        }
        Err(e) => {
            record.finish(e.outcome(), None);
            e.error_response()
        }
    }
}

/// What a recommendation stream needs once its request was accepted.
type Accepted = (mpsc::Receiver<GenerationEvent>, &'static Category, OnAnswer);

fn prepare_base_info(req: &HttpRequest, state: &AppState) -> Result<Accepted, LeafreshError> {
    state.authorize_leafresh(req)?;
    state.refuse_if_draining()?;
    let query = parse_query(req.query_string())?;
    let valid = validate_base_info(&query)?;
    let defaults = &constants().generation_defaults.base_info;
    let prompt = state.engine.model().prompt(&base_info_messages(&valid))?;
    let request = plan(state, prompt, defaults)?;
    let events = state.engine.submit(request)?;
    if let Some(id) = &valid.session_id {
        state.sessions.set_category(id, valid.category);
    }
    // Remembered as the prompt spelled it, so a later turn replays it byte for byte.
    let user_turn = base_info_request(&valid);
    let on_answer = remember_turn(state, valid.session_id.clone(), user_turn);
    Ok((events, valid.category, on_answer))
}

/// Validation and the topic filter answer inside an SSE stream (HTTP 200) with one `error` event.
async fn free_text(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let record = state.metrics.begin("free-text");
    match prepare_free_text(&req, &state) {
        Ok((events, category, on_answer)) => {
            stream_answer(&state, record, events, category, on_answer, &req)
        }
        Err(e) => {
            record.finish(e.outcome(), None);
            if matches!(
                e.status(),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::UNAUTHORIZED
            ) {
                // Overload and a missing key are refusals clients expect as a status code.
                e.error_response()
            } else {
                stream::response(single_error_stream(&e), Duration::ZERO, &req)
            }
        }
    }
}

fn prepare_free_text(req: &HttpRequest, state: &AppState) -> Result<Accepted, LeafreshError> {
    state.authorize_leafresh(req)?;
    state.refuse_if_draining()?;
    let query = parse_query(req.query_string())?;
    let valid = validate_free_text(&query)?;
    let session = valid.session_id.as_deref();
    let category = session.map_or_else(default_category, |id| state.sessions.category(id));
    let history = session
        .map(|id| state.sessions.history(id))
        .unwrap_or_default();
    let defaults = &constants().generation_defaults.free_text;
    let prompt = fit_history(state, &history, &valid.message, category, defaults)?;
    let request = plan(state, prompt, defaults)?;
    let events = state.engine.submit(request)?;
    let user_turn = free_text_request(&valid.message, category);
    let on_answer = remember_turn(state, valid.session_id.clone(), user_turn);
    Ok((events, category, on_answer))
}

async fn clear_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, LeafreshError> {
    state.authorize_leafresh(&req)?;
    let query = parse_query(req.query_string())?;
    let Some(id) = validate_session_id(query.get("sessionId"))? else {
        return Err(LeafreshError::Rejected(Rejection {
            status: 400,
            message: "sessionId는 필수입니다.".into(),
            data: None,
        }));
    };
    state.sessions.clear(&id);
    Ok(HttpResponse::Ok().json(Envelope::new(
        200,
        constants().messages.conversation_cleared.clone(),
        Value::Null,
    )))
}

/// The prompt with the newest turns of the conversation that fit the context with room for a
/// full answer; the oldest go first. (The original never trimmed, until every prompt overflowed.)
fn fit_history(
    state: &AppState,
    history: &[Turn],
    message: &str,
    category: &Category,
    defaults: &GenerationDefaults,
) -> Result<Prompt, LeafreshError> {
    let room = state.engine.slot_context();
    let answer = defaults.max_tokens as usize;
    for skip in 0..=history.len() {
        let messages = free_text_messages(&history[skip..], message, category);
        let prompt = state.engine.model().prompt(&messages)?;
        if prompt.len() + answer <= room || skip == history.len() {
            if skip > 0 {
                tracing::debug!(dropped_turns = skip, "history trimmed to fit the context");
            }
            return Ok(prompt);
        }
    }
    unreachable!("the loop returns at skip == history.len()")
}

/// Sizes the generation: the budget (what the context leaves) and, with the grammar on, answer
/// bounds whose worst case fits that budget, so `close` always parses.
fn plan(
    state: &AppState,
    prompt: Prompt,
    defaults: &GenerationDefaults,
) -> Result<GenerationRequest, LeafreshError> {
    let max_new_tokens = budget::max_new_tokens(
        prompt.len(),
        defaults.max_tokens as usize,
        state.engine.slot_context(),
    )?;
    let grammar = if state.grammar {
        let bounds =
            AnswerBounds::fitting(max_new_tokens).ok_or(LeafreshError::NoRoomForAnswer {
                room: max_new_tokens,
                needed: AnswerBounds::minimum().worst_case_tokens(),
            })?;
        Some(answer_grammar(&bounds))
    } else {
        None
    };
    Ok(GenerationRequest {
        prompt,
        max_new_tokens,
        sampling: SamplingParams {
            temperature: defaults.temperature,
            top_p: defaults.top_p,
            top_k: defaults.top_k,
            repeat_penalty: defaults.repeat_penalty,
            grammar,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
    })
}

type OnAnswer = Box<dyn FnOnce(&str)>;

/// After a successful answer, the session remembers both sides of the turn.
fn remember_turn(state: &AppState, session_id: Option<String>, user: String) -> OnAnswer {
    let sessions = state.sessions.clone();
    Box::new(move |assistant: &str| {
        if let Some(id) = session_id {
            sessions.push_turn(
                &id,
                Turn {
                    user,
                    assistant: assistant.to_owned(),
                },
            );
        }
    })
}

/// The SSE response of a recommendation: `challenge`* then `close` or `error`.
fn stream_answer(
    state: &AppState,
    record: RequestRecord,
    mut events: mpsc::Receiver<GenerationEvent>,
    category: &'static Category,
    on_answer: OnAnswer,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        let mut extractor = FragmentExtractor::new();
        let mut text = String::new();
        let mut finished = None;
        let outcome = loop {
            let event = match stream::next(&mut events, &tx).await {
                stream::Next::Event(event) => event,
                stream::Next::EngineGone => break Err(LeafreshError::Engine(EngineError::Stopped)),
                stream::Next::ClientGone => {
                    // Dropping `events` makes the engine drop this request.
                    record.finish(Outcome::Cancelled, None);
                    return;
                }
            };
            match event {
                GenerationEvent::Text(piece) => {
                    text.push_str(&piece);
                    let Some(fragment) = extractor.push(&piece) else {
                        continue;
                    };
                    if !stream::deliver(&tx, challenge_event(fragment)).await {
                        // Gone or not reading: dropping `events` stops the generation.
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                GenerationEvent::Done(summary) => {
                    if let Some(fragment) = extractor.finish() {
                        stream::deliver(&tx, challenge_event(fragment)).await;
                    }
                    finished = Some(summary);
                    break parse_answer(&text, category).map_err(LeafreshError::from);
                }
                GenerationEvent::Failed(e) => break Err(LeafreshError::Engine(e)),
            }
        };
        let last = match outcome {
            Ok(answer) => {
                on_answer(&text);
                record.finish(Outcome::Ok, finished.as_ref());
                let close = Envelope::new(200, constants().messages.close.clone(), answer);
                envelope_event("close", &close)
            }
            Err(e) => {
                record.finish(e.outcome(), finished.as_ref());
                error_event(&e)
            }
        };
        stream::deliver(&tx, last).await;
    });
    stream::response(rx, state.sse_keepalive, req)
}

/// A stream that carries only one `error` event (free-text validation and refusals).
fn single_error_stream(error: &LeafreshError) -> mpsc::Receiver<sse::Event> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(error_event(error));
    rx
}

fn challenge_event(fragment: String) -> sse::Event {
    envelope_event(
        "challenge",
        &Envelope::new(200, constants().messages.token.clone(), fragment),
    )
}

fn error_event(error: &LeafreshError) -> sse::Event {
    envelope_event("error", &error.envelope())
}

fn envelope_event<T: Serialize>(name: &str, envelope: &Envelope<T>) -> sse::Event {
    // Serializing plain strings and numbers cannot fail.
    let data = serde_json::to_string(envelope).unwrap_or_else(|_| "{}".into());
    sse::Data::new(data).event(name.to_owned()).into()
}
