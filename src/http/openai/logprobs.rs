//! Log probabilities as the OpenAI API writes them: the chat form (`logprobs.content`: each
//! token with its bytes and its `top_logprobs`) and the legacy completions form (`tokens`,
//! `token_logprobs`, `top_logprobs` as token-to-logprob maps, `text_offset`).

use serde_json::{json, Map, Value};

use crate::engine::TokenLogprob;

/// What a probability of zero is written as: JSON has no infinity (vLLM writes the same).
const NEVER: f32 = -9999.0;

fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        NEVER
    }
}

/// A token's text: its bytes as UTF-8, with U+FFFD for a part of a character (its `bytes` say
/// which part).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The chat form of the log probabilities of `tokens`.
pub fn chat(tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|o| json!({"token": text(&o.bytes), "logprob": finite(o.logprob), "bytes": o.bytes}))
                .collect();
            json!({
                "token": text(&t.bytes),
                "logprob": finite(t.logprob),
                "bytes": t.bytes,
                "top_logprobs": top,
            })
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The legacy completions form of the log probabilities of `tokens`, whose text begins at
/// character `offset` of the choice's text.
pub fn legacy(tokens: &[TokenLogprob], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(offset);
        offset += text(&t.bytes).chars().count();
    }
    let top: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let map: Map<String, Value> = t
                .top
                .iter()
                .map(|o| (text(&o.bytes), json!(finite(o.logprob))))
                .collect();
            Value::Object(map)
        })
        .collect();
    json!({
        "tokens": tokens.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| finite(t.logprob)).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": text_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TopLogprob;

    fn token(text: &[u8], logprob: f32) -> TokenLogprob {
        TokenLogprob {
            token: 7,
            bytes: text.to_vec(),
            logprob,
            top: vec![
                TopLogprob {
                    token: 7,
                    bytes: text.to_vec(),
                    logprob,
                },
                TopLogprob {
                    token: 8,
                    bytes: b"x".to_vec(),
                    logprob: f32::NEG_INFINITY,
                },
            ],
        }
    }

    #[test]
    fn the_chat_form_has_each_tokens_bytes_and_its_alternatives() {
        let value = chat(&[token("가".as_bytes(), -0.25)]);
        let first = &value["content"][0];
        assert_eq!(first["token"], "가");
        assert_eq!(first["bytes"], json!([234, 176, 128]));
        assert_eq!(first["logprob"], -0.25);
        assert_eq!(first["top_logprobs"][1]["logprob"], -9999.0);
    }

    #[test]
    fn the_legacy_form_counts_offsets_in_characters_and_splits_no_character() {
        let value = legacy(&[token("가".as_bytes(), -0.5), token(&[0xEB], -1.0)], 3);
        assert_eq!(value["text_offset"], json!([3, 4]));
        assert_eq!(value["tokens"][1], "\u{FFFD}");
        assert_eq!(value["top_logprobs"][0]["가"], -0.5);
    }
}
