//! Reading an upstream's stream: server-sent events, each `data:` a `chat.completion.chunk`
//! (`/v1/chat/completions`) or a `text_completion` chunk (`/v1/completions`, a prompt of token
//! ids), ending with `data: [DONE]`. Pure: bytes in, typed chunks out.

use serde_json::Value;

use crate::{TokenLogprob, TopLogprob};

/// Splits a byte stream into the `data` of its events. Events end with a blank line; bytes may
/// arrive cut anywhere, also inside a UTF-8 character.
#[derive(Debug, Default)]
pub struct EventReader {
    buffer: Vec<u8>,
}

/// The most one event may hold before the stream is taken as garbage.
const MAX_EVENT_BYTES: usize = 1 << 20;

impl EventReader {
    /// The data of every event completed by `bytes`, or an error for a stream that is not SSE.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
            let text = std::str::from_utf8(&raw[..end.0])
                .map_err(|_| "an event that is not UTF-8".to_owned())?;
            let data: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            // Comments (`: keep-alive`) and events without data carry nothing.
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err("an event larger than 1 MiB".into());
        }
        Ok(events)
    }
}

/// Where the first event in `buffer` ends: (length of the event, length of its blank line).
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What one event says.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// Generated text (may be empty: a role-only first chunk).
    Delta {
        text: String,
        /// The model's thinking (`delta.reasoning_content`; vLLM, llama-server and this service
        /// send it; some servers call it `reasoning`).
        reasoning: String,
        /// Pieces of tool calls (`delta.tool_calls`).
        tool_calls: Vec<ToolCallDelta>,
        finish_reason: Option<String>,
        /// The log probabilities of the text's tokens, when asked for.
        logprobs: Vec<TokenLogprob>,
    },
    /// Token counts (`stream_options.include_usage`).
    Usage {
        prompt_tokens: usize,
        completion_tokens: usize,
        cached_tokens: usize,
    },
    /// `[DONE]`: the stream is complete.
    Done,
    /// An error object sent after the stream began.
    Error(String),
}

/// A piece of a streamed tool call: its id and name come first, its arguments in pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: usize,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Parses one event's data; an error for anything that is not a chat completion chunk.
pub fn parse(data: &str) -> Result<Chunk, String> {
    if data.trim() == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let value: Value =
        serde_json::from_str(data).map_err(|_| "an event whose data is not JSON".to_owned())?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("an error without a message");
        return Ok(Chunk::Error(message.to_owned()));
    }
    let choice = value.get("choices").and_then(|c| c.get(0));
    if let Some(choice) = choice {
        let text = choice
            .pointer("/delta/content")
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let reasoning = choice
            .pointer("/delta/reasoning_content")
            .or_else(|| choice.pointer("/delta/reasoning"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let text_of = |call: &Value, pointer: &str| {
            call.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let tool_calls = choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, call)| ToolCallDelta {
                index: call
                    .get("index")
                    .and_then(Value::as_u64)
                    .map_or(i, |n| n as usize),
                id: text_of(call, "/id"),
                name: text_of(call, "/function/name"),
                arguments: text_of(call, "/function/arguments").unwrap_or_default(),
            })
            .collect();
        return Ok(Chunk::Delta {
            text,
            reasoning,
            tool_calls,
            finish_reason,
            logprobs: choice.get("logprobs").map_or_else(Vec::new, logprobs),
        });
    }
    if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
        let count =
            |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0) as usize;
        return Ok(Chunk::Usage {
            prompt_tokens: count("/prompt_tokens"),
            completion_tokens: count("/completion_tokens"),
            cached_tokens: count("/prompt_tokens_details/cached_tokens"),
        });
    }
    Err("an event that is not a chat completion chunk".into())
}

/// A chunk's `logprobs`: the chat form (`content`: a token, its logprob and bytes, its
/// `top_logprobs`) or the legacy completions form (`tokens`, `token_logprobs`, `top_logprobs` as
/// token-to-logprob maps). The upstream names tokens by text, not id: ids are -1.
fn logprobs(value: &Value) -> Vec<TokenLogprob> {
    let float = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY) as f32;
    let bytes = |entry: &Value, token: &str| -> Vec<u8> {
        entry
            .get("bytes")
            .and_then(Value::as_array)
            .map(|b| {
                b.iter()
                    .filter_map(Value::as_u64)
                    .map(|b| b as u8)
                    .collect()
            })
            .unwrap_or_else(|| token.as_bytes().to_vec())
    };
    if let Some(content) = value.get("content").and_then(Value::as_array) {
        return content
            .iter()
            .map(|entry| {
                let token = entry.get("token").and_then(Value::as_str).unwrap_or("");
                TokenLogprob {
                    token: -1,
                    bytes: bytes(entry, token),
                    logprob: float(entry.get("logprob")),
                    top: entry
                        .get("top_logprobs")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|top| {
                            let text = top.get("token").and_then(Value::as_str).unwrap_or("");
                            TopLogprob {
                                token: -1,
                                bytes: bytes(top, text),
                                logprob: float(top.get("logprob")),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
    }
    let tokens = value.get("tokens").and_then(Value::as_array);
    let token_logprobs = value.get("token_logprobs").and_then(Value::as_array);
    let tops = value.get("top_logprobs").and_then(Value::as_array);
    let (Some(tokens), Some(token_logprobs)) = (tokens, token_logprobs) else {
        return Vec::new();
    };
    tokens
        .iter()
        .zip(token_logprobs)
        .enumerate()
        .map(|(i, (token, logprob))| {
            let mut top: Vec<TopLogprob> = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(text, lp)| TopLogprob {
                    token: -1,
                    bytes: text.as_bytes().to_vec(),
                    logprob: float(Some(lp)),
                })
                .collect();
            top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            TokenLogprob {
                token: -1,
                bytes: token.as_str().unwrap_or("").as_bytes().to_vec(),
                logprob: float(Some(logprob)),
                top,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_wherever_the_bytes_are_cut_also_inside_a_hangul_syllable() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"가나\"}}]}\n\n: ping\n\ndata: [DONE]\r\n\r\n";
        let bytes = stream.as_bytes();
        for cut in 1..bytes.len() {
            let mut reader = EventReader::default();
            let mut events = reader.push(&bytes[..cut]).unwrap();
            events.extend(reader.push(&bytes[cut..]).unwrap());
            assert_eq!(events.len(), 2, "cut at {cut}");
            assert_eq!(parse(&events[1]).unwrap(), Chunk::Done);
            assert_eq!(
                parse(&events[0]).unwrap(),
                Chunk::Delta {
                    text: "가나".into(),
                    reasoning: String::new(),
                    tool_calls: Vec::new(),
                    finish_reason: None,
                    logprobs: Vec::new(),
                }
            );
        }
    }

    #[test]
    fn usage_finish_and_error_chunks_are_read() {
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(
            parse(usage).unwrap(),
            Chunk::Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                cached_tokens: 8
            }
        );
        let finish = r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#;
        assert_eq!(
            parse(finish).unwrap(),
            Chunk::Delta {
                tool_calls: Vec::new(),
                text: String::new(),
                reasoning: String::new(),
                finish_reason: Some("length".into()),
                logprobs: Vec::new(),
            }
        );
        let error = r#"{"error":{"message":"boom","type":"server_error"}}"#;
        assert_eq!(parse(error).unwrap(), Chunk::Error("boom".into()));
    }

    #[test]
    fn a_completion_chunk_is_text_too() {
        let chunk = r#"{"object":"text_completion","choices":[{"index":0,"text":"나무","finish_reason":null}]}"#;
        assert_eq!(
            parse(chunk).unwrap(),
            Chunk::Delta {
                text: "나무".into(),
                reasoning: String::new(),
                tool_calls: Vec::new(),
                finish_reason: None,
                logprobs: Vec::new(),
            }
        );
    }

    #[test]
    fn log_probabilities_are_read_in_the_chat_and_the_completions_forms() {
        let chat = r#"{"choices":[{"delta":{"content":"가"},"logprobs":{"content":[
            {"token":"가","logprob":-0.5,"bytes":[234,176,128],
             "top_logprobs":[{"token":"가","logprob":-0.5},{"token":"나","logprob":-1.5}]}]}}]}"#;
        let Chunk::Delta { logprobs, .. } = parse(chat).unwrap() else {
            panic!("a delta")
        };
        assert_eq!(logprobs.len(), 1);
        assert_eq!(logprobs[0].bytes, "가".as_bytes());
        assert_eq!(logprobs[0].logprob, -0.5);
        assert_eq!(logprobs[0].top[1].bytes, "나".as_bytes());
        let legacy = r#"{"choices":[{"text":"ab","logprobs":{"tokens":["a","b"],
            "token_logprobs":[-0.1,-0.2],"top_logprobs":[{"a":-0.1,"c":-3.0},{"b":-0.2}]}}]}"#;
        let Chunk::Delta { logprobs, .. } = parse(legacy).unwrap() else {
            panic!("a delta")
        };
        assert_eq!(logprobs.len(), 2);
        assert_eq!(logprobs[1].logprob, -0.2);
        assert_eq!(logprobs[0].top[0].bytes, b"a");
        assert_eq!(logprobs[0].top[1].logprob, -3.0);
    }

    #[test]
    fn the_models_thinking_is_read_apart_from_its_text() {
        for data in [
            r#"{"choices":[{"delta":{"reasoning_content":"생각"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"생각"}}]}"#,
        ] {
            let Chunk::Delta {
                text, reasoning, ..
            } = parse(data).unwrap()
            else {
                panic!("a delta")
            };
            assert_eq!((text.as_str(), reasoning.as_str()), ("", "생각"));
        }
    }

    #[test]
    fn garbage_is_an_error_not_text() {
        assert!(parse("<html>502 Bad Gateway</html>").is_err());
        assert!(parse(r#"{"hello":"world"}"#).is_err());
        let mut reader = EventReader::default();
        assert!(reader.push(&vec![b'x'; MAX_EVENT_BYTES + 1]).is_err());
        assert!(EventReader::default().push(b"data: \xff\xfe\n\n").is_err());
    }
}
