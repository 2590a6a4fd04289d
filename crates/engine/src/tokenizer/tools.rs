//! Tool calling in Mistral's chat format (v3, the format of Mistral-7B-Instruct-v0.3 and of its
//! GGUF's chat template): the functions are listed in `[AVAILABLE_TOOLS] [...][/AVAILABLE_TOOLS]`
//! before the last user message, the model answers `[TOOL_CALLS] [{"name": ..., "arguments":
//! {...}}]`, and results come back as `[TOOL_RESULTS] {"content": ..., "call_id": ...}
//! [/TOOL_RESULTS]`. llama.cpp applies chat templates without tools, so this module renders such
//! conversations itself, as [`Fragment`]s: only its own control tokens are tokens, every name,
//! argument and result is text (client text is data).
//!
//! Other families' templates render tool conversations themselves ([`super::tool_chat`]); a
//! template without tool support gets the generic format ([`super::generic_tools`]).

use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Value};

use super::pyjson::python_json;
use super::template::{Fragment, SpecialText};
use crate::{ChatMessage, Role, ToolCall, Tools};

/// The text of `[TOOL_CALLS]`, the token a model of Mistral's format begins its calls with.
pub const CALLS_TEXT: &str = "[TOOL_CALLS]";

/// The control tokens of Mistral's tool format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolTokens {
    /// `[TOOL_CALLS]`: the model begins its calls.
    pub calls: LlamaToken,
    available: LlamaToken,
    available_end: LlamaToken,
    results: LlamaToken,
    results_end: LlamaToken,
    inst: LlamaToken,
    inst_end: LlamaToken,
}

impl ToolTokens {
    /// The tokens, if the vocabulary has every one of them.
    pub fn find(specials: &[SpecialText<LlamaToken>]) -> Option<Self> {
        let token = |text: &str| specials.iter().find(|s| s.text == text).map(|s| s.token);
        Some(Self {
            calls: token(CALLS_TEXT)?,
            available: token("[AVAILABLE_TOOLS]")?,
            available_end: token("[/AVAILABLE_TOOLS]")?,
            results: token("[TOOL_RESULTS]")?,
            results_end: token("[/TOOL_RESULTS]")?,
            inst: token("[INST]")?,
            inst_end: token("[/INST]")?,
        })
    }
}

/// Whether a conversation needs this format: tools offered, or calls and results in its history.
pub fn uses_tools(messages: &[ChatMessage], tools: Option<&Tools>) -> bool {
    tools.is_some()
        || messages
            .iter()
            .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty())
}

/// The conversation in Mistral's v3 format, after the BOS token, as Mistral's own tokenizer
/// library (mistral-common) lays it out: the system prompt and the function list go with the
/// last user message.
pub fn render(
    messages: &[ChatMessage],
    tools: Option<&Tools>,
    t: &ToolTokens,
    eos: LlamaToken,
) -> Vec<Fragment<LlamaToken>> {
    let system: Vec<&str> = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let rest = &messages[system.len()..];
    let last_user = rest.iter().rposition(|m| m.role == Role::User);
    let mut out = Vec::new();
    if last_user.is_none() && (!system.is_empty() || tools.is_some()) {
        // No user turn to carry the system prompt and the function list (a conversation that
        // opens with a call and its result): they get a turn of their own, never dropped.
        instruction(&mut out, tools, t, &system.join("\n\n"));
    }
    for (i, m) in rest.iter().enumerate() {
        match m.role {
            Role::User | Role::System => {
                let last = Some(i) == last_user;
                let mut text = String::new();
                if last && !system.is_empty() {
                    text.push_str(&system.join("\n\n"));
                    text.push_str("\n\n");
                }
                text.push_str(&m.content);
                instruction(&mut out, tools.filter(|_| last), t, &text);
            }
            Role::Assistant if !m.tool_calls.is_empty() => out.extend([
                Fragment::Token(t.calls),
                Fragment::Text(format!(" {}", calls_text(&m.tool_calls, true))),
                Fragment::Token(eos),
            ]),
            Role::Assistant => out.extend([
                Fragment::Text(format!(" {}", m.content.trim())),
                Fragment::Token(eos),
            ]),
            Role::Tool => {
                let result = json!({
                    "content": parsed_or_text(&m.content),
                    "call_id": m.tool_call_id.as_deref().unwrap_or_default(),
                });
                out.extend([
                    Fragment::Token(t.results),
                    Fragment::Text(format!(" {}", python_json(&result))),
                    Fragment::Token(t.results_end),
                ]);
            }
        }
    }
    out
}

/// An instruction turn (`[INST] text[/INST]`), after the function list when `tools` is given.
fn instruction(
    out: &mut Vec<Fragment<LlamaToken>>,
    tools: Option<&Tools>,
    t: &ToolTokens,
    text: &str,
) {
    if let Some(tools) = tools {
        out.push(Fragment::Token(t.available));
        out.push(Fragment::Text(format!(" {}", available_tools(tools))));
        out.push(Fragment::Token(t.available_end));
    }
    out.extend([
        Fragment::Token(t.inst),
        Fragment::Text(format!(" {text}")),
        Fragment::Token(t.inst_end),
    ]);
}

/// The `[AVAILABLE_TOOLS]` list: OpenAI's function objects, as Mistral's template writes them.
fn available_tools(tools: &Tools) -> String {
    let list: Vec<Value> = tools
        .functions
        .iter()
        .map(|f| {
            let mut function = serde_json::Map::new();
            function.insert("name".into(), json!(f.name));
            if let Some(description) = &f.description {
                function.insert("description".into(), json!(description));
            }
            function.insert("parameters".into(), f.parameters.clone());
            json!({"type": "function", "function": function})
        })
        .collect();
    python_json(&Value::Array(list))
}

/// Calls as the model writes them (`[{"name": ..., "arguments": {...}}]`), with their ids when
/// they are history.
fn calls_text(calls: &[ToolCall], with_ids: bool) -> String {
    let list: Vec<Value> = calls
        .iter()
        .map(|c| {
            let mut call = serde_json::Map::new();
            call.insert("name".into(), json!(c.name));
            call.insert("arguments".into(), parsed_or_text(&c.arguments));
            if with_ids {
                call.insert("id".into(), json!(c.id));
            }
            Value::Object(call)
        })
        .collect();
    python_json(&Value::Array(list))
}

/// JSON text as its value (arguments arrive from clients as JSON in a string), else the text.
fn parsed_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests;
