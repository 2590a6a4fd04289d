//! The Leafresh recommendation endpoints: base-info, free-text and clear-conversation.
//! Thin: decode and validate the query, start the recommendation (the domain's
//! [`Recommender`](crate::leafresh::Recommender)), and frame what it yields as `challenge` events
//! and one final `close` or `error` event.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{Envelope, LeafreshError};
use super::{stream, AppState};
use crate::leafresh::{
    constants, parse_query, validate_base_info, validate_free_text, validate_session_id, Progress,
    Recommendation, Rejection,
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
    match start_base_info(&req, &state).await {
        Ok(recommendation) => stream_recommendation(&state, record, recommendation, &req),
        Err(e) => {
            record.finish(e.outcome(), None);
            e.error_response()
        }
    }
}

async fn start_base_info(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Recommendation, LeafreshError> {
    state.authorize_leafresh(req)?;
    state.refuse_if_draining()?;
    let query = parse_query(req.query_string())?;
    let valid = validate_base_info(&query)?;
    Ok(state.recommender.base_info(&valid).await?)
}

/// Validation and the topic filter answer inside an SSE stream (HTTP 200) with one `error` event.
async fn free_text(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let record = state.metrics.begin("free-text");
    match start_free_text(&req, &state).await {
        Ok(recommendation) => stream_recommendation(&state, record, recommendation, &req),
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

async fn start_free_text(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Recommendation, LeafreshError> {
    state.authorize_leafresh(req)?;
    state.refuse_if_draining()?;
    let query = parse_query(req.query_string())?;
    let valid = validate_free_text(&query)?;
    Ok(state.recommender.free_text(&valid).await?)
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

/// The SSE response of a recommendation: `challenge`* then `close` or `error`. A client that
/// leaves (or stops reading) drops the recommendation, which cancels its generation.
fn stream_recommendation(
    state: &AppState,
    record: RequestRecord,
    mut recommendation: Recommendation,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        let last = loop {
            let Some(progress) = stream::unless_client_gone(&tx, recommendation.next()).await
            else {
                record.finish(Outcome::Cancelled, None);
                return;
            };
            match progress {
                Progress::Fragment(fragment) => {
                    if !stream::deliver(&tx, challenge_event(fragment)).await {
                        record.finish(Outcome::Cancelled, None);
                        return;
                    }
                }
                Progress::Answered { answer, summary } => {
                    let in_flight = record.finish(Outcome::Ok, Some(&summary));
                    let close = Envelope::new(200, constants().messages.close.clone(), answer);
                    break (envelope_event("close", &close), in_flight);
                }
                Progress::Failed { error, summary } => {
                    let error = LeafreshError::from(error);
                    let in_flight = record.finish(error.outcome(), summary.as_ref());
                    break (error_event(&error), in_flight);
                }
            }
        };
        // In flight until the final event is sent: a stop waits for it.
        let (last, _in_flight) = last;
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
