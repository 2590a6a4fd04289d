//! The generic tool format, for chat templates that know nothing of tools (Gemma's, plain
//! ChatML, DeepSeek-R1's, which ignores `tools`), as llama-server's generic format does it: the
//! functions are described in the system text, the answer is JSON, either
//! `{"tool_calls": [{"name": ..., "arguments": {...}}]}` or `{"response": "..."}` (the grammar
//! holds the model to it), and the history's calls and results are written as that JSON, so the
//! conversation reads as it happened in the only roles the template has.

use serde_json::{json, Value};

use super::pyjson::python_json;
use super::tool_chat::hf_tools;
use crate::{ChatMessage, Role, ToolChoice, Tools};

/// The conversation for a template without tools: the functions (when offered) described in the
/// system message, calls as the assistant's JSON, results as the user's.
pub fn messages(messages: &[ChatMessage], tools: Option<&Tools>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if let Some(tools) = tools {
        out.push(ChatMessage::system(instructions(tools)));
    }
    for m in messages {
        match m.role {
            Role::System if out.len() == 1 && tools.is_some() && out[0].role == Role::System => {
                // The client's system text first, the functions after it: one system message,
                // as templates that accept only one want it.
                let functions = std::mem::take(&mut out[0].content);
                out[0].content = format!("{}\n\n{functions}", m.content);
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = serde_json::from_str::<Value>(&c.arguments)
                            .unwrap_or_else(|_| json!(c.arguments));
                        json!({"name": c.name, "arguments": arguments, "id": c.id})
                    })
                    .collect();
                out.push(ChatMessage::assistant(history_json(
                    &json!({"tool_calls": calls}),
                )));
            }
            Role::Tool => {
                let name = messages
                    .iter()
                    .flat_map(|m| &m.tool_calls)
                    .find(|c| Some(&c.id) == m.tool_call_id.as_ref())
                    .map(|c| c.name.as_str());
                let content =
                    serde_json::from_str::<Value>(&m.content).unwrap_or_else(|_| json!(m.content));
                let result = history_json(&json!({"tool_response": {
                    "name": name, "id": m.tool_call_id, "content": content}}));
                // Results of parallel calls in one user turn: templates that insist on
                // alternating roles (Gemma's) accept no two user turns in a row.
                match out.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last.content.starts_with("{\"tool_response\"") =>
                    {
                        last.content.push('\n');
                        last.content.push_str(&result);
                    }
                    _ => out.push(ChatMessage::user(result)),
                }
            }
            _ => out.push(ChatMessage::new(m.role, m.content.clone())),
        }
    }
    out
}

/// JSON for the history, `<` written `\u003c`: the same value, but no text a template looks for
/// in a content (DeepSeek-R1's cuts an answer at `</think>`) and no markup-like text at all.
fn history_json(value: &Value) -> String {
    // `<` occurs only inside JSON strings, where the escape means the same character.
    python_json(value).replace('<', "\\u003c")
}

/// The system text that offers `tools`, and the JSON the answer must be.
fn instructions(tools: &Tools) -> String {
    let list = python_json(&Value::Array(hf_tools(tools)));
    let calls = r#"{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}"#;
    let answer = match &tools.choice {
        ToolChoice::Auto => format!(
            "Answer in JSON: {calls} to call functions, or {{\"response\": \"<your answer>\"}} \
             to answer the user."
        ),
        ToolChoice::Required => format!("Answer by calling functions, in JSON: {calls}"),
        ToolChoice::Function(name) => {
            format!("Answer by calling the function {name}, in JSON: {calls}")
        }
    };
    format!("You can call these functions:\n{list}\n\n{answer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ToolCall, ToolFunction};

    fn history() -> Vec<ChatMessage> {
        let mut call = ChatMessage::assistant("");
        call.tool_calls = ["c1", "c2"]
            .map(|id| ToolCall {
                id: id.into(),
                name: "now".into(),
                arguments: r#"{"zone": "서울"}"#.into(),
            })
            .to_vec();
        let result = |id: &str, text: &str| ChatMessage {
            tool_call_id: Some(id.into()),
            ..ChatMessage::new(Role::Tool, text)
        };
        vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("a"),
            call,
            result("c1", "12:00"),
            result("c2", r#"{"t": 1}"#),
        ]
    }

    #[test]
    fn calls_and_results_are_json_in_the_roles_the_template_has() {
        let plain = messages(&history(), None);
        assert_eq!(plain.len(), 4);
        assert_eq!(
            plain[2].content,
            r#"{"tool_calls": [{"name": "now", "arguments": {"zone": "서울"}, "id": "c1"}, {"name": "now", "arguments": {"zone": "서울"}, "id": "c2"}]}"#
        );
        assert_eq!(plain[3].role, Role::User);
        assert_eq!(
            plain[3].content,
            "{\"tool_response\": {\"name\": \"now\", \"id\": \"c1\", \"content\": \"12:00\"}}\n\
             {\"tool_response\": {\"name\": \"now\", \"id\": \"c2\", \"content\": {\"t\": 1}}}"
        );
        assert!(plain
            .iter()
            .all(|m| m.tool_calls.is_empty() && m.role != Role::Tool));
    }

    #[test]
    fn the_functions_join_the_clients_system_text() {
        let tools = Tools {
            functions: vec![ToolFunction {
                name: "now".into(),
                description: Some("the time".into()),
                parameters: json!({"type": "object"}),
            }],
            choice: ToolChoice::Required,
            parallel: true,
        };
        let plain = messages(&history(), Some(&tools));
        assert_eq!(plain[0].role, Role::System);
        assert!(plain[0]
            .content
            .starts_with("be brief\n\nYou can call these functions:\n"));
        assert!(plain[0]
            .content
            .contains(r#""name": "now", "description": "the time""#));
        assert_eq!(plain.iter().filter(|m| m.role == Role::System).count(), 1);
    }
}
