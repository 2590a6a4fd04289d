//! The Leafresh recommendation endpoints: base-info, free-text and clear-conversation.
//! Thin: decode and validate the query, build the prompt (domain), submit it (engine), and frame
//! what comes back as `challenge` events and one final `close` or `error` event.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{Envelope, LeafreshError};
use super::AppState;
use crate::engine::{budget, ChatMessage, GenerationEvent, GenerationRequest, SamplingParams};
use crate::leafresh::prompt::{base_info_request, free_text_request};
use crate::leafresh::{
    answer_grammar, base_info_messages, constants, free_text_messages, parse_answer, parse_query,
    validate_base_info, validate_free_text, validate_session_id, AnswerBounds, Category,
    FragmentExtractor, GenerationDefaults, Rejection, Turn,
};

/// Events waiting to be written to one client; the engine side never blocks on it.
const SSE_BUFFER: usize = 64;

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
async fn base_info(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<impl Responder, LeafreshError> {
    let query = parse_query(req.query_string())?;
    let valid = validate_base_info(&query)?;
    let defaults = &constants().generation_defaults.base_info;
    let messages = base_info_messages(&valid);
    let request = plan(&state, &messages, defaults)?;
    let events = state.engine.submit(request)?;
    if let Some(id) = &valid.session_id {
        state.sessions.set_category(id, valid.category);
    }
    // Remembered as the prompt spelled it, so a later turn replays it byte for byte.
    let user_turn = base_info_request(&valid);
    let on_answer = remember_turn(&state, valid.session_id.clone(), user_turn);
    Ok(stream_answer(
        "base-info",
        events,
        valid.category,
        on_answer,
    ))
}

/// Validation and the topic filter answer inside an SSE stream (HTTP 200) with one `error` event.
async fn free_text(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match start_free_text(&req, &state) {
        Ok(response) => response,
        // Overload is the one refusal clients expect as a status code (with Retry-After).
        Err(e) if e.status() == actix_web::http::StatusCode::SERVICE_UNAVAILABLE => {
            actix_web::ResponseError::error_response(&e)
        }
        Err(e) => single_error_stream(&e)
            .respond_to(&req)
            .map_into_boxed_body(),
    }
}

fn start_free_text(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, LeafreshError> {
    let query = parse_query(req.query_string())?;
    let valid = validate_free_text(&query)?;
    let category = valid
        .session_id
        .as_deref()
        .map_or_else(crate::leafresh::default_category, |id| {
            state.sessions.category(id)
        });
    let history = valid
        .session_id
        .as_deref()
        .map(|id| state.sessions.history(id))
        .unwrap_or_default();
    let defaults = &constants().generation_defaults.free_text;
    let messages = fit_history(state, &history, &valid.message, category, defaults)?;
    let request = plan(state, &messages, defaults)?;
    let events = state.engine.submit(request)?;
    let user_turn = free_text_request(&valid.message, category);
    let on_answer = remember_turn(state, valid.session_id.clone(), user_turn);
    Ok(stream_answer("free-text", events, category, on_answer)
        .respond_to(req)
        .map_into_boxed_body())
}

async fn clear_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, LeafreshError> {
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

/// The newest turns of the conversation that fit the context with room for a full answer; the
/// oldest go first. (The original never trimmed, until every prompt overflowed.)
fn fit_history(
    state: &AppState,
    history: &[Turn],
    message: &str,
    category: &Category,
    defaults: &GenerationDefaults,
) -> Result<Vec<ChatMessage>, LeafreshError> {
    let room = state.engine.slot_context();
    let answer = defaults.max_tokens as usize;
    for skip in 0..=history.len() {
        let messages = free_text_messages(&history[skip..], message, category);
        let prompt = state.engine.model().prompt(&messages)?;
        if prompt.len() + answer <= room || skip == history.len() {
            if skip > 0 {
                tracing::debug!(dropped_turns = skip, "history trimmed to fit the context");
            }
            return Ok(messages);
        }
    }
    unreachable!("the loop returns at skip == history.len()")
}

/// Tokenizes the prompt and sizes the generation: the budget (what the context leaves) and, with
/// the grammar on, answer bounds whose worst case fits that budget, so `close` always parses.
fn plan(
    state: &AppState,
    messages: &[ChatMessage],
    defaults: &GenerationDefaults,
) -> Result<GenerationRequest, LeafreshError> {
    let prompt = state.engine.model().prompt(messages)?;
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
    endpoint: &'static str,
    mut events: mpsc::Receiver<GenerationEvent>,
    category: &'static Category,
    on_answer: OnAnswer,
) -> impl Responder {
    let (tx, rx) = mpsc::channel::<sse::Event>(SSE_BUFFER);
    actix_web::rt::spawn(async move {
        let started = Instant::now();
        let mut extractor = FragmentExtractor::new();
        let mut text = String::new();
        let outcome = loop {
            let Some(event) = events.recv().await else {
                break Err(LeafreshError::Internal(
                    "the inference engine stopped".into(),
                ));
            };
            match event {
                GenerationEvent::Text(piece) => {
                    text.push_str(&piece);
                    if let Some(fragment) = extractor.push(&piece) {
                        if tx.send(challenge_event(fragment)).await.is_err() {
                            // Client gone: dropping `events` stops the generation.
                            tracing::info!(endpoint, "client disconnected during generation");
                            return;
                        }
                    }
                }
                GenerationEvent::Done(summary) => {
                    if let Some(fragment) = extractor.finish() {
                        let _ = tx.send(challenge_event(fragment)).await;
                    }
                    tracing::info!(
                        endpoint,
                        prompt_tokens = summary.prompt_tokens,
                        completion_tokens = summary.completion_tokens,
                        ttft_ms = summary.time_to_first_token.as_millis() as u64,
                        total_ms = started.elapsed().as_millis() as u64,
                        finish = summary.finish_reason.as_str(),
                        "generation finished"
                    );
                    break parse_answer(&text, category).map_err(|e| {
                        LeafreshError::Internal(format!("the answer could not be parsed: {e}"))
                    });
                }
                GenerationEvent::Failed(e) => break Err(LeafreshError::Engine(e)),
            }
        };
        let last = match outcome {
            Ok(answer) => {
                on_answer(&text);
                envelope_event(
                    "close",
                    &Envelope::new(200, constants().messages.close.clone(), answer),
                )
            }
            Err(e) => error_event(&e),
        };
        let _ = tx.send(last).await;
    });
    sse_response(rx)
}

/// A stream that carries only one `error` event (free-text validation and refusals).
fn single_error_stream(error: &LeafreshError) -> impl Responder {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(error_event(error));
    sse_response(rx)
}

fn sse_response(rx: mpsc::Receiver<sse::Event>) -> impl Responder {
    sse::Sse::from_infallible_receiver(rx)
        .customize()
        .insert_header(("X-Accel-Buffering", "no"))
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
