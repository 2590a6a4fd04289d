//! The `/v1/chat/completions` flow, as [`crate::leafresh::Recommender`] is the Leafresh one: a
//! conversation fitted to the context window (`--context-overflow trim` drops the oldest turns),
//! the offered tools dropped when their definitions leave no room for an answer, then submitted.
//! Counted once: the count fitting made goes on to the engine with the request. The handler
//! decodes the request into a [`Generation`] and frames what comes back.

use crate::config::ContextOverflow;
use crate::engine::{
    fit, ChatMessage, CountedPrompt, Engine, EngineError, Generation, GenerationEvents, ToolChoice,
    Tools,
};

/// A submitted conversation: its choices' events, and what was left out to make it fit.
pub struct Started {
    /// One channel of events per choice.
    pub choices: Vec<GenerationEvents>,
    /// Oldest messages left out (`--context-overflow trim`).
    pub messages_dropped: usize,
    /// Functions no longer offered (their definitions left no room).
    pub tools_dropped: usize,
    /// The prompt's tokens, counted before it was submitted (protocols that announce the usage
    /// before the answer, as Anthropic's `message_start` does, need it early).
    pub prompt_tokens: usize,
}

/// Fits `request` (its whole conversation, its `max_tokens` set) to the window and submits it
/// for `n` choices (which share the prompt's computation where the engine can).
pub async fn start(
    engine: &dyn Engine,
    overflow: ContextOverflow,
    request: Generation,
    n: usize,
) -> Result<Started, EngineError> {
    let max_tokens = request.max_tokens.unwrap_or(0);
    // Counted, fitted and sent for the model the request names.
    let model = request.model.as_deref();
    let mut tools = request.tools.clone();
    let mut fitted = fit(
        engine,
        model,
        overflow,
        &request.messages,
        tools.as_ref(),
        max_tokens,
    )
    .await?;
    let mut tools_dropped = 0;
    if let Some(offered) = tools.as_ref().filter(|t| t.choice == ToolChoice::Auto) {
        // Tool definitions can be long (Open WebUI offers 36 by default): when they leave no
        // room, answering in text beats refusing the message.
        let counted = match &fitted.counted {
            Some(counted) => counted.clone(),
            None => {
                let counted = engine
                    .count_tokens(model, fitted.messages.clone(), tools.clone())
                    .await?;
                fitted.counted = Some(counted.clone());
                counted
            }
        };
        if counted.tokens + reserve(engine, model, max_tokens) > engine.context_window(model) {
            tools_dropped = offered.functions.len();
            tools = None;
            fitted = fit(engine, model, overflow, &request.messages, None, max_tokens).await?;
        }
    }
    let messages_dropped = fitted.dropped;
    // Counted once in any case: the count goes to the engine with the request.
    let counted = match fitted.counted {
        Some(counted) => counted,
        None => {
            engine
                .count_tokens(model, fitted.messages.clone(), tools.clone())
                .await?
        }
    };
    let prompt_tokens = counted.tokens;
    let generation = Generation {
        messages: fitted.messages,
        tools,
        counted: Some(counted),
        ..request
    };
    let choices = match n {
        1 => vec![engine.submit(generation).await?],
        n => engine.submit_choices(generation, n).await?,
    };
    Ok(Started {
        choices,
        messages_dropped,
        tools_dropped,
        prompt_tokens,
    })
}

/// Room kept for the answer when fitting a conversation: its `max_tokens`, but never more than
/// half the window (a long answer must not cost the whole conversation).
fn reserve(engine: &dyn Engine, model: Option<&str>, max_tokens: usize) -> usize {
    max_tokens.min(engine.context_window(model) / 2)
}

/// The conversation to send (trimmed with `--context-overflow trim`), how many messages were
/// left out, and its prompt's count where fitting made one.
struct Fit {
    messages: Vec<ChatMessage>,
    dropped: usize,
    counted: Option<CountedPrompt>,
}

async fn fit(
    engine: &dyn Engine,
    model: Option<&str>,
    overflow: ContextOverflow,
    messages: &[ChatMessage],
    tools: Option<&Tools>,
    max_tokens: usize,
) -> Result<Fit, EngineError> {
    match overflow {
        ContextOverflow::Trim => {
            let fitted = fit::trim_oldest_turns(
                engine,
                model,
                messages.to_vec(),
                tools,
                reserve(engine, model, max_tokens),
            )
            .await?;
            Ok(Fit {
                messages: fitted.messages,
                dropped: fitted.dropped,
                counted: Some(fitted.counted),
            })
        }
        ContextOverflow::Error => Ok(Fit {
            messages: messages.to_vec(),
            dropped: 0,
            counted: None,
        }),
    }
}
