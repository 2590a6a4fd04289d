//! Counting prompt tokens for an upstream, so that the token budget still respects the context
//! window and free-text history is trimmed as with the embedded engine.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Upstream;
use super::UpstreamError;
use crate::prepare::PreparePool;
use crate::tokenizer::{refuse_text_over_context, Tokenizer};
use crate::{ChatMessage, CountedPrompt, EngineError, RawPrompt, Tools};

/// How prompt tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// The model's own vocabulary and template, loaded here (`--tokenizer FILE.gguf`).
    Local,
    /// `POST /tokenize` with the chat messages: vLLM, and this service.
    ChatTokenize,
    /// llama-server: `POST /apply-template` renders the messages, `POST /tokenize` counts them.
    ApplyTemplate,
}

/// Tokens allowed for each message's chat-template text when nothing can count exactly.
const TEMPLATE_TOKENS_PER_MESSAGE: usize = 8;

/// The most bytes one token of an upstream's vocabulary is taken to hold, for refusing a prompt
/// that cannot fit before it is sent to be counted: real vocabularies' longest tokens are runs of
/// whitespace or punctuation of a few dozen bytes.
pub const REMOTE_MAX_TOKEN_BYTES: usize = 64;

/// An upper bound for an upstream that cannot count: one token per byte of content (byte
/// fallback never needs more) plus the template's text. Budgets come out smaller than they could
/// be, never too large.
pub fn upper_bound(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.content.len() + TEMPLATE_TOKENS_PER_MESSAGE)
        .sum::<usize>()
        + TEMPLATE_TOKENS_PER_MESSAGE
}

/// The prompt tokens of `messages` with the local vocabulary (`--tokenizer`), and the prompt's
/// tokens: no need to reach the upstream. Contents that cannot fit `window` whatever their tokens
/// are refused before they are rendered, as the embedded engine does.
pub async fn count_locally(
    tokenizer: &(Arc<Tokenizer>, PreparePool),
    window: usize,
    messages: Vec<ChatMessage>,
    tools: Option<Tools>,
) -> Result<CountedPrompt, EngineError> {
    let (tokenizer, pool) = tokenizer;
    let tokenizer = Arc::clone(tokenizer);
    pool.run(move || {
        let no_args = serde_json::Map::new();
        match tokenizer.prompt_within(&messages, tools.as_ref(), &no_args, window, None) {
            // The lower bound already says it does not fit: the budget refuses it.
            Err(EngineError::PromptOverContext { at_least, .. }) => {
                Ok(CountedPrompt::count(at_least))
            }
            prompt => prompt.map(|p| CountedPrompt::prepared(p.len(), p)),
        }
    })
    .await
}

/// The tokens of a raw prompt (`/v1/completions`) with the local vocabulary, and its tokens.
pub async fn count_raw_locally(
    tokenizer: &(Arc<Tokenizer>, PreparePool),
    window: usize,
    raw: RawPrompt,
) -> Result<CountedPrompt, EngineError> {
    let (tokenizer, pool) = tokenizer;
    let tokenizer = Arc::clone(tokenizer);
    pool.run(move || {
        tokenizer
            .raw_prompt(&raw, window)
            .map(|p| CountedPrompt::prepared(p.len(), p))
    })
    .await
}

/// The tokens of a raw prompt as the upstream counts them: token ids are counted here; text goes
/// to its `/tokenize` (vLLM's `prompt`, llama-server's `content`); an upstream that cannot count
/// gets the byte upper bound.
pub async fn count_raw_remotely(
    upstream: &Upstream,
    model: &str,
    raw: &RawPrompt,
) -> Result<CountedPrompt, EngineError> {
    let text = match raw {
        RawPrompt::Tokens(ids) => return Ok(CountedPrompt::count(ids.len())),
        RawPrompt::Text(text) => text.clone(),
        RawPrompt::Infill { prefix, suffix } => format!("{prefix}{suffix}"),
    };
    let body = json!({"model": model, "prompt": text, "content": text, "add_special": true});
    let counted = upstream
        .post_json(&format!("{}/tokenize", upstream.root), &body)
        .await
        .ok()
        .and_then(|answer| {
            answer
                .get("count")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .or_else(|| answer.get("tokens").and_then(Value::as_array).map(Vec::len))
        });
    // Infill adds the model's three FIM tokens (and a BOS).
    let extra = if matches!(raw, RawPrompt::Infill { .. }) {
        4
    } else {
        0
    };
    Ok(CountedPrompt::count(
        counted.unwrap_or(raw.text_bytes() + 1) + extra,
    ))
}

/// The prompt tokens of `messages` for `model` as the upstream counts them (or an upper bound
/// when it cannot). Contents that cannot fit `window` are not sent to be counted.
pub async fn count_remotely(
    upstream: &Upstream,
    counting: Option<Counting>,
    model: &str,
    window: usize,
    messages: Vec<ChatMessage>,
    tools: Option<Tools>,
) -> Result<CountedPrompt, EngineError> {
    if let Err(EngineError::PromptOverContext { at_least, .. }) =
        refuse_text_over_context(&messages, tools.as_ref(), REMOTE_MAX_TOKEN_BYTES, window)
    {
        return Ok(CountedPrompt::count(at_least));
    }
    remote_count(upstream, counting, model, messages, tools)
        .await
        .map(CountedPrompt::count)
        .map_err(EngineError::from)
}

/// The prompt tokens of `messages` as the upstream counts them (or an upper bound).
async fn remote_count(
    upstream: &Upstream,
    counting: Option<Counting>,
    model: &str,
    messages: Vec<ChatMessage>,
    tools: Option<Tools>,
) -> Result<usize, UpstreamError> {
    // The offered functions, as the request carries them.
    let offered = tools.as_ref().map(Tools::to_openai);
    match counting {
        None => {
            Ok(upper_bound(&messages)
                + offered.as_ref().map_or(0, |t| t["tools"].to_string().len()))
        }
        Some(Counting::Local) => unreachable!("counted locally in `count_locally`"),
        Some(Counting::ChatTokenize) => {
            let mut body =
                json!({"model": model, "messages": messages, "add_generation_prompt": true});
            if let Some(offered) = &offered {
                body["tools"] = offered["tools"].clone();
            }
            let answer = upstream
                .post_json(&format!("{}/tokenize", upstream.root), &body)
                .await
                .map_err(UpstreamError::Unavailable)?;
            answer
                .get("count")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| UpstreamError::Failed("/tokenize gave no count".into()))
        }
        Some(Counting::ApplyTemplate) => {
            let rendered = upstream
                .post_json(
                    &format!("{}/apply-template", upstream.root),
                    &match &offered {
                        Some(offered) => json!({"messages": messages, "tools": offered["tools"]}),
                        None => json!({"messages": messages}),
                    },
                )
                .await
                .map_err(UpstreamError::Unavailable)?;
            let prompt = rendered
                .get("prompt")
                .and_then(Value::as_str)
                .ok_or_else(|| UpstreamError::Failed("/apply-template gave no prompt".into()))?;
            let tokens = upstream
                .post_json(
                    &format!("{}/tokenize", upstream.root),
                    &json!({"content": prompt, "add_special": true}),
                )
                .await
                .map_err(UpstreamError::Unavailable)?;
            tokens
                .get("tokens")
                .and_then(Value::as_array)
                .map(Vec::len)
                .ok_or_else(|| UpstreamError::Failed("/tokenize gave no tokens".into()))
        }
    }
}
