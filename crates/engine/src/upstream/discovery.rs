//! What the upstream serves and how to count its tokens, learnt from the upstream itself and kept
//! fresh by a background check that also answers `/health`.
//!
//! - models and context: `GET {base}/models` (`data[].id`; vLLM and this service add
//!   `max_model_len`, the context window of one request); llama-server instead reports its
//!   per-slot context in `GET /props` (`default_generation_settings.n_ctx`);
//! - counting: `POST /tokenize` with chat messages (vLLM, this service), or llama-server's
//!   `POST /apply-template` then `POST /tokenize`; see `counting`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::counting::Counting;
use super::Upstream;

/// What was learnt at the last successful check (nothing before the first: then no request is
/// sent).
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The models served, the default first; empty until the first successful check.
    pub models: Vec<String>,
    /// Each model's context window of one request, where the model list says it (vLLM, this
    /// service: `max_model_len`).
    pub contexts: HashMap<String, usize>,
    /// llama-server's per-slot context (`/props`), for the model it serves.
    pub slot_context: Option<usize>,
    pub counting: Option<Counting>,
    /// Prompts go as token ids (`/v1/completions`): there is a local tokenizer (every upstream
    /// this service fronts takes token-id prompts: vLLM, llama-server, another instance of this
    /// service).
    pub token_prompts: bool,
}

/// Checks every this long while the upstream answers.
const HEALTHY_PERIOD: Duration = Duration::from_secs(5);
/// While it does not, the checks back off from the first to the last of these.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));

/// Keeps `upstream.reachable` and the discovered facts current, for as long as the engine lives.
pub async fn watch(upstream: Arc<Upstream>) {
    let mut delay = BACKOFF.0;
    let mut was_reachable = None;
    loop {
        match discover(&upstream).await {
            Ok(found) => {
                if was_reachable != Some(true) {
                    tracing::info!(
                        upstream = %upstream.base,
                        models = ?found.models,
                        contexts = ?found.contexts,
                        slot_context = ?found.slot_context,
                        counting = ?found.counting,
                        token_prompts = found.token_prompts,
                        "upstream engine reachable"
                    );
                }
                *upstream
                    .discovered
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = found;
                upstream.reachable.store(true, Ordering::Relaxed);
                was_reachable = Some(true);
                delay = BACKOFF.0;
                tokio::time::sleep(HEALTHY_PERIOD).await;
            }
            Err(why) => {
                upstream.reachable.store(false, Ordering::Relaxed);
                if was_reachable != Some(false) {
                    tracing::warn!(
                        upstream = %upstream.base,
                        %why,
                        "upstream engine unreachable; /health answers 503 and requests 503 until \
                         it answers (checked again with backoff)"
                    );
                }
                was_reachable = Some(false);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF.1);
            }
        }
    }
}

/// One check: the model list (which must answer), then the context and the counting method.
async fn discover(upstream: &Upstream) -> Result<Discovered, String> {
    let models = upstream
        .get_json(&format!("{}/models", upstream.base))
        .await?;
    let data = models
        .get("data")
        .and_then(Value::as_array)
        .ok_or("GET /models did not return a model list")?;
    let ids: Vec<String> = data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let model = upstream
        .settings
        .model
        .clone()
        .or_else(|| ids.first().cloned())
        .ok_or("the upstream serves no model")?;
    let contexts: HashMap<String, usize> = data
        .iter()
        .filter_map(|m| {
            let id = m.get("id").and_then(Value::as_str)?;
            let window = m.get("max_model_len").and_then(Value::as_u64)?;
            Some((id.to_owned(), window as usize))
        })
        .collect();
    // llama-server: its per-slot context, and its own way of counting.
    let props = upstream
        .get_json(&format!("{}/props", upstream.root))
        .await
        .ok();
    let slot_context = props
        .as_ref()
        .and_then(|p| p.pointer("/default_generation_settings/n_ctx"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let counting = if upstream.tokenizer.is_some() {
        Some(Counting::Local)
    } else if slot_context.is_some() {
        Some(Counting::ApplyTemplate)
    } else if tokenizes_messages(upstream, &model).await {
        Some(Counting::ChatTokenize)
    } else {
        None
    };
    let mut models = ids;
    // The configured model first: it is the default.
    if let Some(position) = models.iter().position(|m| *m == model) {
        models.swap(0, position);
    }
    Ok(Discovered {
        models,
        contexts,
        slot_context,
        counting,
        token_prompts: upstream.tokenizer.is_some(),
    })
}

/// Whether `POST /tokenize` takes chat messages (vLLM's and this service's form).
async fn tokenizes_messages(upstream: &Upstream, model: &str) -> bool {
    let probe = json!({"model": model, "messages": [{"role": "user", "content": "안녕"}]});
    upstream
        .post_json(&format!("{}/tokenize", upstream.root), &probe)
        .await
        .is_ok_and(|answer| answer.get("count").and_then(Value::as_u64).is_some())
}
