//! Conversations with tools rendered by the model's own Jinja template, as Hugging Face's
//! `apply_chat_template(messages, tools=...)` renders them: the function list, assistant turns
//! with `tool_calls`, `tool` results and the request's template arguments (`enable_thinking`)
//! are written the way the template writes them, which is the way the model was trained.
//!
//! Client text stays text: the conversation's strings reach the template escaped
//! ([`Neutralizer`]), so only the template's own text can be markup.
//!
//! Templates disagree on how a call turn must look (content `""` or `null`, arguments an object
//! or JSON text; see tests/fixtures/chat_templates.json): which one a template renders is found
//! once, by rendering a probe conversation each way.

use llama_cpp_2::model::LlamaModel;
use serde_json::{json, Map, Value};

use super::jinja::JinjaTemplate;
use super::neutral::Neutralizer;
use crate::{ChatMessage, EngineError, Role, ToolCall, Tools};

/// How an assistant turn that called functions is given to the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallTurn {
    /// Its `content`: `""` or `null` (Qwen3 needs a string, DeepSeek-R1 `null`).
    null_content: bool,
    /// Each call's `arguments` as JSON text rather than an object (DeepSeek-R1 concatenates it).
    arguments_as_text: bool,
}

const CALL_TURNS: [CallTurn; 4] = [
    CallTurn {
        null_content: false,
        arguments_as_text: false,
    },
    CallTurn {
        null_content: true,
        arguments_as_text: false,
    },
    CallTurn {
        null_content: true,
        arguments_as_text: true,
    },
    CallTurn {
        null_content: false,
        arguments_as_text: true,
    },
];

/// A Jinja template that renders tool conversations.
pub struct ToolChat {
    jinja: JinjaTemplate,
    neutral: Neutralizer,
    /// How call turns are given; `None`: the template drops or refuses them, so the history's
    /// calls and results are written as text (the generic format).
    call_turn: Option<CallTurn>,
    /// The template writes the function list itself (it reads `tools`).
    lists_tools: bool,
}

impl ToolChat {
    /// The template `source` for tool conversations; `markup`: the texts client strings must not
    /// spell. `None` when minijinja cannot compile it.
    pub fn new(llama: &LlamaModel, source: String, markup: Vec<String>) -> Option<Self> {
        let jinja = JinjaTemplate::new(llama, source).ok()?;
        let mut chat = Self {
            jinja,
            neutral: Neutralizer::new(markup),
            call_turn: None,
            lists_tools: false,
        };
        chat.lists_tools = chat.probe_lists_tools();
        chat.call_turn = CALL_TURNS
            .into_iter()
            .find(|&turn| chat.probe_call_turn(turn));
        Some(chat)
    }

    /// Whether the template writes the function list.
    pub fn lists_tools(&self) -> bool {
        self.lists_tools
    }

    /// Whether the template writes earlier calls and their results.
    pub fn renders_calls(&self) -> bool {
        self.call_turn.is_some()
    }

    /// The conversation rendered (ending with the assistant's cue), its client strings escaped:
    /// markup in it is the template's; [`ToolChat::restore`] gives the text between markup back.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&Tools>,
        template_args: &Map<String, Value>,
    ) -> Result<String, EngineError> {
        let turn = self.call_turn.unwrap_or(CALL_TURNS[0]);
        let mut context = template_args.clone();
        context.insert("messages".into(), Value::Array(hf_messages(messages, turn)));
        context.insert("add_generation_prompt".into(), Value::Bool(true));
        if let Some(tools) = tools {
            context.insert("tools".into(), Value::Array(hf_tools(tools)));
        }
        match self.render_context(context.clone()) {
            // A template written for tools only (Hermes 2 Pro's `tool_use`) iterates `tools`
            // whether or not there are any: a history of calls without functions offered now.
            Err(EngineError::Template(_)) if tools.is_none() && self.lists_tools => {
                context.insert("tools".into(), Value::Array(Vec::new()));
                self.render_context(context)
            }
            rendered => rendered,
        }
    }

    /// A Hugging Face context (`messages`, `tools`, `add_generation_prompt`, template arguments)
    /// rendered, its `messages` and `tools` escaped.
    pub fn render_context(&self, mut context: Map<String, Value>) -> Result<String, EngineError> {
        if let Some(tools) = context.get_mut("tools") {
            self.neutral.escape_value(tools);
        }
        for message in context
            .get_mut("messages")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            // An earlier answer's thinking markers are the model's own output, and templates cut
            // the thinking out of it by them (Qwen3's `content.split('</think>')`).
            let assistant = message.get("role").and_then(Value::as_str) == Some("assistant");
            match message.get_mut("content") {
                Some(Value::String(content)) if assistant => {
                    *content = self.neutral.escape_except(content, &THINKING_MARKERS);
                }
                _ => {}
            }
            if let Some(fields) = message.as_object_mut() {
                for (key, value) in fields.iter_mut() {
                    if !(assistant && key == "content") {
                        self.neutral.escape_value(value);
                    }
                }
            }
        }
        self.jinja.render_json(&Value::Object(context))
    }

    /// Text between markup of a rendering, with the client's text given back.
    pub fn restore(&self, text: &str) -> String {
        self.neutral.restore(text)
    }

    fn probe_lists_tools(&self) -> bool {
        let tools = json!([{"type": "function", "function": {
            "name": PROBE_NAME, "description": "probe",
            "parameters": {"type": "object", "properties": {}}}}]);
        let context = json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "add_generation_prompt": true,
        });
        self.jinja
            .render_json(&context)
            .is_ok_and(|text| text.contains(PROBE_NAME))
    }

    fn probe_call_turn(&self, turn: CallTurn) -> bool {
        let call = ToolCall {
            id: "call00001".into(),
            name: PROBE_NAME.into(),
            arguments: r#"{"probe_argument": 1}"#.into(),
        };
        let mut assistant = ChatMessage::assistant("");
        assistant.tool_calls.push(call);
        let mut result = ChatMessage::new(Role::Tool, PROBE_RESULT);
        result.tool_call_id = Some("call00001".into());
        let messages = hf_messages(&[ChatMessage::user("hi"), assistant, result], turn);
        let mut context = json!({"messages": messages, "add_generation_prompt": true});
        if self.lists_tools {
            context["tools"] = Value::Array(Vec::new());
        }
        self.jinja.render_json(&context).is_ok_and(|text| {
            text.contains(PROBE_NAME)
                && text.contains("probe_argument")
                && text.contains(PROBE_RESULT)
        })
    }
}

/// Markers of a thinking section, left in earlier answers for the template to find.
const THINKING_MARKERS: [&str; 2] = ["<think>", "</think>"];

const PROBE_NAME: &str = "leafresh_probe_function";
const PROBE_RESULT: &str = "leafresh_probe_result";

/// The messages as Hugging Face's templates read them (OpenAI's shape): calls under
/// `tool_calls[].function`, results with the `tool_call_id` and the `name` of the call they
/// answer.
fn hf_messages(messages: &[ChatMessage], turn: CallTurn) -> Vec<Value> {
    let name_of = |id: &str| {
        messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
    };
    messages
        .iter()
        .map(|m| {
            let mut message = Map::new();
            message.insert("role".into(), json!(m.role.as_str()));
            if m.tool_calls.is_empty() {
                message.insert("content".into(), json!(m.content));
            } else {
                let content = if m.content.is_empty() && turn.null_content {
                    Value::Null
                } else {
                    json!(m.content)
                };
                message.insert("content".into(), content);
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = match serde_json::from_str::<Value>(&c.arguments) {
                            Ok(value) if !turn.arguments_as_text => value,
                            _ => json!(c.arguments),
                        };
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": arguments}})
                    })
                    .collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            if let Some(id) = &m.tool_call_id {
                message.insert("tool_call_id".into(), json!(id));
                if let Some(name) = name_of(id) {
                    message.insert("name".into(), json!(name));
                }
            }
            Value::Object(message)
        })
        .collect()
}

/// The functions as OpenAI's `tools` list.
pub fn hf_tools(tools: &Tools) -> Vec<Value> {
    tools
        .functions
        .iter()
        .map(|f| {
            let mut function = Map::new();
            function.insert("name".into(), json!(f.name));
            if let Some(description) = &f.description {
                function.insert("description".into(), json!(description));
            }
            function.insert("parameters".into(), f.parameters.clone());
            json!({"type": "function", "function": function})
        })
        .collect()
}
