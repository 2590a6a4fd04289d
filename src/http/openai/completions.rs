//! `POST /v1/completions`, the legacy text completions evaluation harnesses, code completion
//! clients and gateways use: a raw prompt (text, a list of texts, token ids, a list of token-id
//! lists) continued without the chat template. Text is tokenized with the model's special tokens
//! recognised: here the markup is the caller's to write (it may spell a chat template itself),
//! and token ids are the caller's too (each checked against the vocabulary). `suffix` asks for
//! fill-in-the-middle, where the model has FIM tokens.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_lab::sse;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{
    boolean, format, include_usage, integer, stop, OutputFormat, SamplingFields, MAX_CHOICES,
};
use super::response::{completion_id, unix_seconds, Usage};
use super::{data, logprobs, outcome_of, read_request};
use crate::engine::{
    EngineError, Generation, GenerationEvent, GenerationEvents, GenerationSummary, RawPrompt,
    SamplingParams,
};
use crate::http::answers::{gather, merged, total_usage, Answer};
use crate::http::error::OpenAiError;
use crate::http::{stream, AppState};
use crate::metrics::{Outcome, RequestRecord};

/// The `endpoint` label of the metrics.
const ENDPOINT: &str = "completions";
/// Most prompts of one request.
const MAX_PROMPTS: usize = 16;
/// Most alternatives per token (`logprobs`), as vLLM allows (OpenAI: 5).
const MAX_LOGPROBS: i64 = 20;
/// OpenAI's default budget of a completion that sets none.
const DEFAULT_MAX_TOKENS: usize = 16;

/// The request as sent; validation, not serde, says what is missing or wrong.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: Option<Value>,
    prompt: Option<Value>,
    suffix: Option<Value>,
    max_tokens: Option<Value>,
    stop: Option<Value>,
    stream: Option<Value>,
    stream_options: Option<Value>,
    echo: Option<Value>,
    logprobs: Option<Value>,
    n: Option<Value>,
    best_of: Option<Value>,
    response_format: Option<Value>,
    skip_special_tokens: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    top_k: Option<Value>,
    min_p: Option<Value>,
    repeat_penalty: Option<Value>,
    presence_penalty: Option<Value>,
    frequency_penalty: Option<Value>,
    seed: Option<Value>,
    logit_bias: Option<Value>,
}

/// A request whose every value is present and in range.
#[derive(Debug, Clone)]
pub struct ValidCompletion {
    pub model: String,
    pub prompts: Vec<RawPrompt>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub echo: bool,
    pub n: usize,
    /// JSON the answer must be (vLLM's and llama-server's `response_format` here too).
    pub format: OutputFormat,
    /// Special tokens sampled are sent as their text (`skip_special_tokens: false`).
    pub special_text: bool,
}

impl CompletionRequest {
    pub fn validate(self) -> Result<ValidCompletion, OpenAiError> {
        let model = match self.model {
            Some(Value::String(model)) if !model.trim().is_empty() => model,
            _ => {
                return Err(
                    OpenAiError::invalid("model", "`model` is required (a string)")
                        .code("missing_required_parameter"),
                )
            }
        };
        let prompts = prompts(self.prompt)?;
        let suffix = match self.suffix {
            None | Some(Value::Null) => None,
            Some(Value::String(suffix)) => Some(suffix),
            Some(_) => {
                return Err(OpenAiError::invalid("suffix", "`suffix` must be a string")
                    .code("invalid_type"))
            }
        };
        let prompts = match suffix {
            None => prompts,
            Some(suffix) => prompts
                .into_iter()
                .map(|prompt| match prompt {
                    RawPrompt::Text(prefix) => Ok(RawPrompt::Infill {
                        prefix,
                        suffix: suffix.clone(),
                    }),
                    _ => Err(OpenAiError::invalid(
                        "suffix",
                        "`suffix` needs a text prompt, not token ids",
                    )
                    .code("invalid_value")),
                })
                .collect::<Result<_, _>>()?,
        };
        let echo = boolean("echo", self.echo.as_ref())?.unwrap_or(false);
        let logprobs = integer("logprobs", self.logprobs.as_ref(), 0, MAX_LOGPROBS)?;
        if echo && logprobs.is_some() {
            // The harnesses' loglikelihood requests: every prompt token's log probability.
            return Err(OpenAiError::invalid(
                "echo",
                "`echo` with `logprobs` is not supported: log probabilities of prompt tokens are \
                 not computed, only those of generated tokens",
            )
            .code("invalid_value"));
        }
        if echo && prompts.iter().any(|p| !matches!(p, RawPrompt::Text(_))) {
            return Err(OpenAiError::invalid(
                "echo",
                "`echo` is supported with text prompts (without `suffix`)",
            )
            .code("invalid_value"));
        }
        let n = integer("n", self.n.as_ref(), 1, MAX_CHOICES)?.unwrap_or(1) as usize;
        if let Some(best_of) = integer("best_of", self.best_of.as_ref(), 1, MAX_CHOICES)? {
            if best_of as usize != n {
                return Err(OpenAiError::invalid(
                    "best_of",
                    "`best_of` other than `n` is not supported: every choice is returned",
                )
                .code("invalid_value"));
            }
        }
        if prompts.len() * n > MAX_CHOICES as usize * 4 {
            return Err(OpenAiError::invalid(
                "n",
                "too many completions in one request: prompts times `n` may be at most 64",
            )
            .code("invalid_value"));
        }
        let sampling = SamplingFields {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            logit_bias: self.logit_bias,
        }
        .validate(logprobs.map(|k| k as usize))?;
        Ok(ValidCompletion {
            model,
            prompts,
            max_tokens: integer("max_tokens", self.max_tokens.as_ref(), 1, 1 << 20)?
                .map_or(DEFAULT_MAX_TOKENS, |n| n as usize),
            sampling,
            stop: stop(self.stop)?,
            stream: boolean("stream", self.stream.as_ref())?.unwrap_or(false),
            include_usage: include_usage(self.stream_options.as_ref())?,
            echo,
            n,
            format: format(self.response_format)?,
            special_text: !boolean("skip_special_tokens", self.skip_special_tokens.as_ref())?
                .unwrap_or(true),
        })
    }
}

/// `prompt`: a string, a list of strings, token ids, or a list of token-id lists.
fn prompts(value: Option<Value>) -> Result<Vec<RawPrompt>, OpenAiError> {
    let invalid =
        |message: &str| OpenAiError::invalid("prompt", message.to_owned()).code("invalid_type");
    let token_ids = |items: &[Value]| -> Option<Vec<u32>> {
        items
            .iter()
            .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect()
    };
    let prompts =
        match value {
            Some(Value::String(text)) => vec![RawPrompt::Text(text)],
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(invalid("`prompt` must not be empty"))
            }
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .into_iter()
                .map(|v| RawPrompt::Text(v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
                vec![RawPrompt::Tokens(token_ids(&items).ok_or_else(|| {
                    invalid("token ids in `prompt` must be whole numbers from 0")
                })?)]
            }
            Some(Value::Array(items)) if items.iter().all(Value::is_array) => items
                .iter()
                .map(|list| {
                    let ids = list.as_array().and_then(|l| token_ids(l)).ok_or_else(|| {
                        invalid("token ids in `prompt` must be whole numbers from 0")
                    })?;
                    Ok(RawPrompt::Tokens(ids))
                })
                .collect::<Result<_, OpenAiError>>()?,
            None | Some(Value::Null) => {
                return Err(OpenAiError::invalid("prompt", "`prompt` is required")
                    .code("missing_required_parameter"))
            }
            Some(_) => return Err(invalid(
                "`prompt` must be a string, a list of strings, a list of token ids or a list of \
                 token-id lists",
            )),
        };
    if prompts.len() > MAX_PROMPTS {
        return Err(OpenAiError::invalid(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts per request"),
        )
        .code("array_above_max_length"));
    }
    if prompts
        .iter()
        .any(|p| matches!(p, RawPrompt::Tokens(ids) if ids.is_empty()))
    {
        return Err(invalid("a token-id prompt must not be empty"));
    }
    Ok(prompts)
}

pub async fn completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let record = state.metrics.begin(ENDPOINT);
    let started = accept(&req, payload, &state).await;
    let (valid, choices) = match started {
        Ok(started) => started,
        Err(e) => {
            record.finish(outcome_of(&e), None);
            return e.error_response();
        }
    };
    let meta = Meta {
        id: completion_id("cmpl-"),
        created: unix_seconds(),
        model: valid.model.clone(),
    };
    if valid.stream {
        return stream_choices(&state, record, meta, valid, choices, &req);
    }
    match gather(choices).await {
        Ok(answers) => {
            let summaries = summaries_of(&answers);
            record.finish(Outcome::Ok, total_usage(&summaries).as_ref());
            HttpResponse::Ok().json(meta.whole(&valid, &answers))
        }
        Err(e) => {
            let e = OpenAiError::from(e);
            record.finish(outcome_of(&e), None);
            e.error_response()
        }
    }
}

/// Reads and validates the request, then submits each prompt for `n` choices (choice
/// `prompt * n + i` answers prompt `prompt`).
async fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(ValidCompletion, Vec<GenerationEvents>), OpenAiError> {
    let request: CompletionRequest = read_request(req, payload, state).await?;
    let valid = request.validate()?;
    super::check_model(state, &valid.model)?;
    let mut choices = Vec::with_capacity(valid.prompts.len() * valid.n);
    for prompt in &valid.prompts {
        let generation = Generation {
            raw: Some(prompt.clone()),
            sampling: valid.sampling.clone(),
            max_tokens: Some(valid.max_tokens),
            stop: valid.stop.clone(),
            model: Some(valid.model.clone()),
            constraint: valid.format.constraint(),
            special_text: valid.special_text,
            ..Generation::default()
        };
        match valid.n {
            1 => choices.push(state.engine.submit(generation).await?),
            n => choices.extend(state.engine.submit_choices(generation, n).await?),
        }
    }
    Ok((valid, choices))
}

/// The summaries of each prompt's first choice count the prompt; every choice counts its
/// completion.
fn summaries_of(answers: &[(Answer, GenerationSummary)]) -> Vec<GenerationSummary> {
    answers.iter().map(|(_, s)| s.clone()).collect()
}

/// The usage of several prompts, each with `n` choices: each prompt once, every completion.
fn usage(summaries: &[GenerationSummary], n: usize) -> Option<Usage> {
    let mut total = total_usage(summaries)?;
    total.prompt_tokens = summaries
        .iter()
        .step_by(n.max(1))
        .map(|s| s.prompt_tokens)
        .sum();
    total.cached_tokens = summaries
        .iter()
        .step_by(n.max(1))
        .map(|s| s.cached_tokens)
        .sum();
    Some(Usage::of(&total, 0, 0))
}

/// What every object of one completion shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn object(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer: a choice per prompt and choice, the prompt first with `echo`.
    fn whole(&self, valid: &ValidCompletion, answers: &[(Answer, GenerationSummary)]) -> Value {
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(index, (answer, summary))| {
                let echoed = echoed(valid, index);
                json!({
                    "index": index,
                    "text": format!("{echoed}{}", answer.text),
                    "logprobs": valid.sampling.logprobs.map(|_| {
                        logprobs::legacy(&answer.logprobs, echoed.chars().count())
                    }),
                    "finish_reason": summary.finish_reason.as_str(),
                })
            })
            .collect();
        let mut object = self.object(json!(choices));
        object["usage"] = json!(usage(&summaries_of(answers), valid.n));
        object
    }

    fn chunk(&self, index: usize, text: String, logprobs: Value, finish: Option<&str>) -> Value {
        self.object(json!([{
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish,
        }]))
    }
}

/// The prompt text `echo` puts before choice `index`'s answer.
fn echoed(valid: &ValidCompletion, index: usize) -> String {
    match (&valid.echo, valid.prompts.get(index / valid.n.max(1))) {
        (true, Some(RawPrompt::Text(text))) => text.clone(),
        _ => String::new(),
    }
}

/// Streams `text_completion` chunks as the choices' tokens arrive (the prompt first with
/// `echo`), then each choice's finish, the usage when asked for, and `[DONE]`.
fn stream_choices(
    state: &AppState,
    record: RequestRecord,
    meta: Meta,
    valid: ValidCompletion,
    choices: Vec<GenerationEvents>,
    req: &HttpRequest,
) -> HttpResponse {
    let (tx, rx) = stream::channel();
    actix_web::rt::spawn(async move {
        let count = choices.len();
        // Characters sent per choice: where the next token's text begins (`text_offset`).
        let mut sent = vec![0usize; count];
        for (index, offset) in sent.iter_mut().enumerate() {
            let echoed = echoed(&valid, index);
            if !echoed.is_empty() {
                *offset = echoed.chars().count();
                if !stream::deliver(&tx, data(&meta.chunk(index, echoed, Value::Null, None))).await
                {
                    record.finish(Outcome::Cancelled, None);
                    return;
                }
            }
        }
        let mut events = merged(choices);
        let mut pending = vec![Vec::new(); count];
        let mut summaries: Vec<Option<GenerationSummary>> = vec![None; count];
        let mut failure = None;
        while summaries.iter().any(Option::is_none) {
            let Some(next) = stream::unless_client_gone(&tx, events.next()).await else {
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
                    let lp = valid
                        .sampling
                        .logprobs
                        .map_or(Value::Null, |_| logprobs::legacy(&tokens, sent[index]));
                    sent[index] += piece.chars().count();
                    meta.chunk(index, piece, lp, None)
                }
                // A raw prompt offers no tools and is not read for thinking.
                GenerationEvent::ToolCall { .. }
                | GenerationEvent::ToolArguments { .. }
                | GenerationEvent::Reasoning(_) => continue,
                GenerationEvent::Done(summary) => {
                    let chunk = meta.chunk(
                        index,
                        String::new(),
                        Value::Null,
                        Some(summary.finish_reason.as_str()),
                    );
                    summaries[index] = Some(summary);
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
        let done: Option<Vec<GenerationSummary>> = summaries.into_iter().collect();
        // In flight until `[DONE]` is sent: a stop waits for it.
        let _in_flight = match (failure, done) {
            (None, Some(done)) => {
                let in_flight = record.finish(Outcome::Ok, total_usage(&done).as_ref());
                if valid.include_usage {
                    let mut chunk = meta.object(json!([]));
                    chunk["usage"] = json!(usage(&done, valid.n));
                    stream::deliver(&tx, data(&chunk)).await;
                }
                in_flight
            }
            (failure, _) => {
                let e = failure.unwrap_or_else(|| EngineError::Stopped.into());
                let in_flight = record.finish(outcome_of(&e), None);
                stream::deliver(&tx, data(&e.body())).await;
                in_flight
            }
        };
        stream::deliver(&tx, sse::Data::new("[DONE]").into()).await;
    });
    stream::response(rx, state.sse_keepalive, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: Value) -> Result<ValidCompletion, OpenAiError> {
        serde_json::from_value::<CompletionRequest>(body)
            .unwrap()
            .validate()
    }

    #[test]
    fn prompts_are_text_lists_of_text_token_ids_or_lists_of_them() {
        let prompts =
            |prompt: Value| validate(json!({"model": "m", "prompt": prompt})).map(|v| v.prompts);
        assert_eq!(
            prompts(json!("가")).unwrap(),
            [RawPrompt::Text("가".into())]
        );
        assert_eq!(prompts(json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(
            prompts(json!([1, 2, 3])).unwrap(),
            [RawPrompt::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(prompts(json!([[1], [2, 3]])).unwrap().len(), 2);
        for bad in [
            json!([]),
            json!([-1]),
            json!([1.5]),
            json!([[]]),
            json!(7),
            json!(["a", 1]),
        ] {
            assert_eq!(
                prompts(bad.clone()).unwrap_err().param.as_deref(),
                Some("prompt"),
                "{bad}"
            );
        }
    }

    #[test]
    fn suffix_makes_an_infill_prompt_and_needs_text() {
        let valid = validate(json!({"model": "m", "prompt": "def f(", "suffix": "):"})).unwrap();
        assert_eq!(
            valid.prompts,
            [RawPrompt::Infill {
                prefix: "def f(".into(),
                suffix: "):".into()
            }]
        );
        let err = validate(json!({"model": "m", "prompt": [1, 2], "suffix": "x"})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("suffix"));
    }

    #[test]
    fn the_defaults_and_the_refused_combinations() {
        let valid = validate(json!({"model": "m", "prompt": "a"})).unwrap();
        assert_eq!((valid.max_tokens, valid.n, valid.echo), (16, 1, false));
        assert_eq!(valid.sampling.logprobs, None);
        let valid = validate(json!({"model": "m", "prompt": "a", "logprobs": 3})).unwrap();
        assert_eq!(valid.sampling.logprobs, Some(3));
        for (body, param) in [
            (
                json!({"model": "m", "prompt": "a", "echo": true, "logprobs": 1}),
                "echo",
            ),
            (json!({"model": "m", "prompt": [1], "echo": true}), "echo"),
            (
                json!({"model": "m", "prompt": "a", "n": 2, "best_of": 3}),
                "best_of",
            ),
            (
                json!({"model": "m", "prompt": "a", "logprobs": 21}),
                "logprobs",
            ),
            (json!({"prompt": "a"}), "model"),
        ] {
            assert_eq!(
                validate(body.clone()).unwrap_err().param.as_deref(),
                Some(param),
                "{body}"
            );
        }
    }
}
