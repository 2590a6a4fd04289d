//! `POST /v1/chat/completions`: the conversation through the model's chat template, `n` choices
//! sharing the prompt, log probabilities on request, streamed as `chat.completion.chunk`s or
//! answered whole.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use futures_util::StreamExt;

use super::request::{ChatRequest, ValidChatRequest};
use super::response::CompletionMeta;
use super::{data, outcome_of, read_request};
use crate::chat_completions;
use crate::engine::{EngineError, Generation, GenerationEvent, GenerationEvents, TokenLogprob};
use crate::http::answers::{gather, merged, total_usage};
use crate::http::error::OpenAiError;
use crate::http::{stream, AppState};
use crate::metrics::{Outcome, RequestRecord};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "chat-completions";

pub async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut record = state.metrics.begin(ENDPOINT);
    let started = accept(&req, payload, &state).await;
    if let Ok(started) = &started {
        record.messages_dropped(started.meta.messages_dropped);
        record.tools_dropped(started.meta.tools_dropped);
    }
    let started = match started {
        Ok(started) => started,
        Err(e) => {
            record.finish(outcome_of(&e), None);
            return e.error_response();
        }
    };
    if started.stream {
        return stream_choices(&state, record, started, &req);
    }
    match gather(started.choices).await {
        Ok(answers) => {
            let summaries: Vec<_> = answers.iter().map(|(_, s)| s.clone()).collect();
            let total = total_usage(&summaries);
            record.finish(Outcome::Ok, total.as_ref());
            HttpResponse::Ok().json(started.meta.completion(&answers, started.logprobs))
        }
        Err(e) => {
            let e = OpenAiError::from(e);
            record.finish(outcome_of(&e), None);
            e.error_response()
        }
    }
}

/// An accepted request: its choices' events and how to frame them.
struct Started {
    meta: CompletionMeta,
    stream: bool,
    include_usage: bool,
    logprobs: bool,
    choices: Vec<GenerationEvents>,
}

/// Reads and validates the request, then fits and submits it (its `n` choices).
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Started, OpenAiError> {
    let request: ChatRequest = read_request(req, payload, state).await?;
    let valid = request.validate()?;
    super::check_model(state, &valid.model)?;
    // Without max_tokens a reply could fill its whole slot, and the next turn would not fit.
    let max_tokens = valid.max_tokens.unwrap_or(state.default_max_tokens);
    let started = chat_completions::start(
        &*state.engine,
        state.context_overflow,
        generation(&valid, max_tokens),
        valid.n,
    )
    .await?;
    Ok(Started {
        meta: CompletionMeta::new(
            valid.model.clone(),
            started.messages_dropped,
            started.tools_dropped,
        ),
        stream: valid.stream,
        include_usage: valid.include_usage,
        logprobs: valid.sampling.logprobs.is_some(),
        choices: started.choices,
    })
}

/// The request as the engine takes it: the whole conversation (the chat-completions flow fits
/// it), at most `max_tokens` new tokens (the room the context leaves caps it further).
pub fn generation(valid: &ValidChatRequest, max_tokens: usize) -> Generation {
    Generation {
        messages: valid.messages.clone(),
        sampling: valid.sampling.clone(),
        constraint: valid.format.constraint(),
        max_tokens: Some(max_tokens),
        stop: valid.stop.clone(),
        model: Some(valid.model.clone()),
        tools: valid.tools.clone(),
        template_args: valid.template_args.clone(),
        ..Generation::default()
    }
}

/// Streams `chat.completion.chunk`s as the choices' tokens arrive, then `[DONE]`. The log
/// probabilities of a piece's tokens (sent by the engine before the piece) go in its chunk.
fn stream_choices(
    state: &AppState,
    record: RequestRecord,
    started: Started,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    let Started {
        meta,
        include_usage,
        logprobs,
        choices,
        ..
    } = started;
    actix_web::rt::spawn(async move {
        let n = choices.len();
        for index in 0..n {
            if !stream::deliver(&tx, data(&meta.role_chunk(index))).await {
                record.finish(Outcome::Cancelled, None);
                return;
            }
        }
        let mut events = merged(choices);
        let mut pending: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
        let (mut summaries, mut ended, mut failure) = (Vec::new(), 0, None);
        while ended < n {
            let Some(next) = stream::unless_client_gone(&tx, events.next()).await else {
                // Dropping the events makes the engine drop these requests.
                record.finish(Outcome::Cancelled, None);
                return;
            };
            let Some((index, event)) = next else { break };
            let chunk = match event {
                GenerationEvent::Logprobs(tokens) => {
                    pending[index].extend(tokens);
                    continue;
                }
                GenerationEvent::Text(piece) => {
                    let tokens = std::mem::take(&mut pending[index]);
                    meta.content_chunk(index, piece, logprobs.then_some(&tokens[..]))
                }
                GenerationEvent::Reasoning(text) => meta.reasoning_chunk(index, text),
                GenerationEvent::ToolCall {
                    index: call,
                    id,
                    name,
                } => meta.tool_call_chunk(index, call, &id, &name),
                GenerationEvent::ToolArguments {
                    index: call,
                    fragment,
                } => meta.arguments_chunk(index, call, fragment),
                GenerationEvent::Done(summary) => {
                    ended += 1;
                    let chunk = meta.finish_chunk(index, &summary);
                    summaries.push(summary);
                    chunk
                }
                GenerationEvent::Failed(e) => {
                    failure = Some(OpenAiError::from(e));
                    break;
                }
            };
            if !stream::deliver(&tx, data(&chunk)).await {
                record.finish(Outcome::Cancelled, None);
                return;
            }
        }
        drop(events);
        // In flight until `[DONE]` is sent: a stop waits for it.
        let _in_flight = match (failure, total_usage(&summaries)) {
            (None, Some(total)) if ended == n => {
                let in_flight = record.finish(Outcome::Ok, Some(&total));
                if include_usage {
                    stream::deliver(&tx, data(&meta.usage_chunk(&total))).await;
                }
                in_flight
            }
            (failure, _) => {
                let e = failure.unwrap_or_else(|| EngineError::Stopped.into());
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
