//! Tool calls in each model family's own syntax. Models are trained to call functions in one
//! markup (Mistral's `[TOOL_CALLS]` list, Hermes' `<tool_call>` blocks, Llama 3.1's bare JSON,
//! DeepSeek's fenced blocks, gpt-oss's harmony messages); a grammar in another markup fights the
//! model, and a parser for another markup misses its calls. So per [`CallSyntax`]: the texts that
//! begin calls in a free answer ([`CallSyntax::triggers`]), the grammar of the calls
//! ([`calls_grammar`]) and a reader of the streamed answer ([`CallParser`]) that says what is
//! text, what is reasoning and what is a call, in the client-neutral [`ToolCallEvent`]s.
//!
//! Markup is written as its text here (special tokens sampled are detokenized to it); the grammar
//! builder leaves it to its caller to say which markup texts are single control tokens
//! (`marker`), because only the model's vocabulary knows.

use serde_json::{json, Map, Value};

use super::{schema_refs, ToolCallEvent, ToolCallStream};
use crate::llama::guidance::schema_text;
use crate::{ToolChoice, ToolFunction, Tools};

/// How a model family writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSyntax {
    /// `[TOOL_CALLS] [{"name": .., "arguments": {..}}, ..]`: one JSON list after the marker and a
    /// space (Mistral v0.3).
    Mistral,
    /// `<tool_call>\n{"name": .., "arguments": {..}}\n</tool_call>` per call, calls joined by
    /// `\n` (Hermes 2 Pro, Qwen 2.5 and 3).
    Hermes,
    /// The answer is `{"name": .., "parameters": {..}}` (the key is `parameters`), optionally
    /// after `<|python_tag|>`; one call only (Llama 3.1).
    Llama3,
    /// `<｜tool▁calls▁begin｜>`, then per call `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{..}\n```<｜tool▁call▁end｜>`
    /// joined by `\n`, then `<｜tool▁calls▁end｜>` (DeepSeek V3 and R1).
    DeepSeek,
    /// gpt-oss's harmony messages: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{..}<|call|>`,
    /// or the recipient in the header (` to=functions.NAME<|channel|>commentary json<|message|>`);
    /// the analysis channel is reasoning, the final channel the answer. One call per answer:
    /// `<|call|>` ends generation.
    Harmony,
    /// For templates without tool support: the whole answer is JSON, `{"tool_calls": [{"name":
    /// .., "arguments": {..}}, ..]}` or `{"response": "text"}`.
    Generic,
}

const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const DEEPSEEK_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DEEPSEEK_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DEEPSEEK_SEP: &str = "<｜tool▁sep｜>";
const DEEPSEEK_CALL_END: &str = "<｜tool▁call▁end｜>";
const DEEPSEEK_CALLS_END: &str = "<｜tool▁calls▁end｜>";
const HARMONY_CHANNEL: &str = "<|channel|>";
const HARMONY_CONSTRAIN: &str = "<|constrain|>";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_START: &str = "<|start|>";
const HARMONY_END: &str = "<|end|>";
const HARMONY_CALL: &str = "<|call|>";
const HARMONY_RETURN: &str = "<|return|>";

impl CallSyntax {
    /// Texts that begin calls in a free answer: the lazy grammar's triggers, from which on
    /// [`calls_grammar`] applies (it starts with the trigger text). Llama 3's `{` counts only at
    /// the answer's start (after leading whitespace), where its JSON call begins; elsewhere a
    /// brace is text. Harmony's calls begin where a commentary message is addressed to a function,
    /// after the channel or in the header. Generic: none, its grammar applies from the first
    /// token.
    pub fn triggers(self) -> &'static [&'static str] {
        match self {
            Self::Mistral => &[MISTRAL_CALLS],
            Self::Hermes => &[HERMES_OPEN],
            Self::Llama3 => &[PYTHON_TAG, "{"],
            Self::DeepSeek => &[DEEPSEEK_CALLS_BEGIN],
            Self::Harmony => &["<|channel|>commentary to=", " to=functions."],
            Self::Generic => &[],
        }
    }

    /// Whether the syntax can carry several calls in one answer.
    pub fn parallel(self) -> bool {
        match self {
            Self::Mistral | Self::Hermes | Self::DeepSeek | Self::Generic => true,
            // Llama 3.1's template refuses several calls; harmony's `<|call|>` ends generation.
            Self::Llama3 | Self::Harmony => false,
        }
    }
}

/// The functions a call may name: only the named one when the choice names one.
fn offered(tools: &Tools) -> impl Iterator<Item = (usize, &ToolFunction)> {
    tools
        .functions
        .iter()
        .enumerate()
        .filter(|(_, f)| match &tools.choice {
            ToolChoice::Function(name) => &f.name == name,
            _ => true,
        })
}

/// A function's arguments schema; an empty one means any object (as in [`super::calls_schema`]).
fn arguments_schema(function: &ToolFunction) -> Value {
    match function.parameters.as_object() {
        Some(o) if !o.is_empty() => function.parameters.clone(),
        _ => json!({"type": "object"}),
    }
}

/// The schema of one call object, `{"name": .., key: {..}}`, of any offered function, with every
/// function's `$defs` hoisted into `defs` (the caller puts them at its document's root).
fn call_object_schema(tools: &Tools, key: &str, defs: &mut Map<String, Value>) -> Value {
    let choices: Vec<Value> = offered(tools)
        .map(|(i, f)| {
            let arguments = schema_refs::hoist(&format!("function{i}"), arguments_schema(f), defs);
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, key: arguments},
                "required": ["name", key],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({"anyOf": choices})
}

/// `schema` with `defs` at its root, where its `$ref`s point.
fn rooted(mut schema: Value, defs: Map<String, Value>) -> Value {
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// A Lark string literal of `text` (llguidance reads literals as JSON strings).
fn literal(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// The Lark `%json` body of `schema`, laid out as every other grammar of this service.
fn json_rule(schema: Value) -> String {
    format!("%json {}", schema_text(schema))
}

/// The Lark grammar (llguidance dialect, start rule `start`) of the calls part of an answer: from
/// its start marker (included) to the end of its last call. The end-of-generation token is not
/// part of it (llguidance allows EOS at an accepting state), except harmony's `<|call|>`, which is
/// both the call's end and a stop token. Only the functions `tools.choice` allows; several calls
/// only if `tools.parallel` and the syntax has them; arguments valid for each function's schema.
///
/// `marker(text)` gives the Lark terminal of a markup text: `<[id]>` when the text is one control
/// token of the model's vocabulary (the model samples that token, never the text spelled out),
/// else a quoted literal. Every markup text goes through it.
pub fn calls_grammar(syntax: CallSyntax, tools: &Tools, marker: &dyn Fn(&str) -> String) -> String {
    let several = tools.parallel && syntax.parallel();
    // `first ("\n" first)*` when several calls may follow each other.
    let repeated = |call: &str, separator: &str| {
        if several {
            format!("{call} ({separator} {call})*")
        } else {
            call.to_owned()
        }
    };
    match syntax {
        CallSyntax::Mistral => format!(
            "start: {} \" \" calls\ncalls: {}\n",
            marker(MISTRAL_CALLS),
            json_rule(super::calls_schema(tools))
        ),
        CallSyntax::Hermes => {
            let mut defs = Map::new();
            let call = call_object_schema(tools, "arguments", &mut defs);
            format!(
                "start: {}\ncall: {} \"\\n\" body \"\\n\" {}\nbody: {}\n",
                repeated("call", "\"\\n\""),
                marker(HERMES_OPEN),
                marker(HERMES_CLOSE),
                json_rule(rooted(call, defs))
            )
        }
        CallSyntax::Llama3 => {
            let mut defs = Map::new();
            let call = call_object_schema(tools, "parameters", &mut defs);
            format!(
                "start: ({})? call\ncall: {}\n",
                marker(PYTHON_TAG),
                json_rule(rooted(call, defs))
            )
        }
        CallSyntax::DeepSeek => {
            let mut grammar = format!(
                "start: {} {} {}\n",
                marker(DEEPSEEK_CALLS_BEGIN),
                repeated("call", "\"\\n\""),
                marker(DEEPSEEK_CALLS_END)
            );
            let functions: Vec<_> = offered(tools).collect();
            grammar += &alternatives("call", functions.len());
            for (n, (_, f)) in functions.iter().enumerate() {
                // The arguments are a whole JSON document: the function's own schema, its
                // `$defs` at the right root already.
                grammar += &format!(
                    "call{n}: {} \"function\" {} {} args{n} \"\\n```\" {}\nargs{n}: {}\n",
                    marker(DEEPSEEK_CALL_BEGIN),
                    marker(DEEPSEEK_SEP),
                    literal(&format!("{}\n```json\n", f.name)),
                    marker(DEEPSEEK_CALL_END),
                    json_rule(arguments_schema(f))
                );
            }
            grammar
        }
        CallSyntax::Harmony => harmony_grammar(tools, marker),
        CallSyntax::Generic => format!("start: {}\n", json_rule(generic_schema(tools, false))),
    }
}

/// `rule: rule0 | rule1 | ...`, one alternative per offered function.
fn alternatives(rule: &str, count: usize) -> String {
    let names: Vec<String> = (0..count).map(|n| format!("{rule}{n}")).collect();
    format!("{rule}: {}\n", names.join(" | "))
}

/// How gpt-oss writes JSON: compact, no space after `,` and `:` (harmony's reference renderer
/// does so, and a grammar insisting on spaces would fight the model at every key).
const HARMONY_JSON_LAYOUT: &str = r#"{"whitespace_flexible": false, "item_separator": ",", "key_separator": ":", "lenient": true}"#;

/// Harmony: an optional analysis message (the model reasons before it calls, and a required call
/// must not forbid that), then one call in either header form. The analysis text is free and
/// ends at the first `<|end|>`; the next message header `<|start|>assistant` follows it.
fn harmony_grammar(tools: &Tools, marker: &dyn Fn(&str) -> String) -> String {
    let channel = marker(HARMONY_CHANNEL);
    let message = marker(HARMONY_MESSAGE);
    let mut grammar = format!(
        "start: analysis? call\n\
         analysis: {channel} \"analysis\" {message} analysis_text {} \"assistant\"\n\
         analysis_text[stop={}]: /(.|\\n)*/\n\
         constrain: \" \" {} \"json\" | \" json\"\n",
        marker(HARMONY_START),
        marker(HARMONY_END),
        marker(HARMONY_CONSTRAIN),
    );
    let functions: Vec<_> = offered(tools).collect();
    grammar += &alternatives("call", functions.len());
    for (n, (_, f)) in functions.iter().enumerate() {
        let recipient = literal(&format!(" to=functions.{}", f.name));
        let after_channel = literal(&format!("commentary to=functions.{}", f.name));
        let mut arguments = arguments_schema(f);
        if let Value::Object(fields) = &mut arguments {
            fields
                .entry("x-guidance")
                .or_insert_with(|| serde_json::from_str(HARMONY_JSON_LAYOUT).expect("valid JSON"));
        }
        grammar += &format!(
            "call{n}: ({channel} {after_channel} | {recipient} {channel} \"commentary\") constrain? \
             {message} args{n} {}\nargs{n}: {}\n",
            marker(HARMONY_CALL),
            json_rule(arguments)
        );
    }
    grammar
}

/// The Generic answer's schema: `{"tool_calls": [...]}`, or with `response` also
/// `{"response": "text"}`.
fn generic_schema(tools: &Tools, response: bool) -> Value {
    let mut list = super::calls_schema(tools);
    // The list's `$defs` move to the document's root, where its `$ref`s point.
    let defs = match list.as_object_mut().and_then(|o| o.remove("$defs")) {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    let calls = json!({
        "type": "object",
        "properties": {"tool_calls": list},
        "required": ["tool_calls"],
        "additionalProperties": false,
    });
    let schema = if response {
        json!({"anyOf": [calls, {
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
            "additionalProperties": false,
        }]})
    } else {
        calls
    };
    rooted(schema, defs)
}

/// For [`CallSyntax::Generic`] with [`ToolChoice::Auto`]: the grammar of an answer that is either
/// `{"tool_calls": [...]}` or `{"response": "<text>"}`, so that a model without tool training can
/// still choose between calling and answering. With a required or named call,
/// `calls_grammar(Generic, ..)` (the tool_calls form only) applies instead.
pub fn generic_answer_grammar(tools: &Tools) -> String {
    let response = tools.choice == ToolChoice::Auto;
    format!("start: {}\n", json_rule(generic_schema(tools, response)))
}

/// What a piece of the answer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Content for the client.
    Text(String),
    /// The model's thinking (`reasoning_content`).
    Reasoning(String),
    Call(ToolCallEvent),
}

/// Where a JSON value's characters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// To the [`ToolCallStream`]: a list of call objects (or one call object after the `[` fed
    /// for it).
    Calls,
    /// Out as the arguments of call `index`.
    Arguments(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Free text before any call.
    Text,
    /// Between and after calls: markup that is not a call's beginning is dropped.
    Between,
    /// Whitespace before a JSON value.
    BeforeJson(Sink),
    /// Inside a JSON value, until it ends.
    Json(Sink),
    /// DeepSeek: from a call's begin marker to the newline after its name.
    DeepSeekHead,
    /// DeepSeek: the code fence before the arguments.
    DeepSeekFence { fenced: bool },
    /// Harmony: a message's header, up to `<|message|>`.
    HarmonyHeader,
    /// Harmony: a message's text; `reasoning` on the analysis channel.
    HarmonyBody { reasoning: bool },
    /// The whole answer is a Generic JSON object.
    Generic,
    /// Nothing more is read.
    Done,
}

/// Reads a whole answer as it streams, in pieces cut anywhere, with special tokens written as
/// their text: content is [`Parsed::Text`] (text before the first call; Generic's `response`
/// string, unescaped; harmony's final channel), harmony's analysis channel is
/// [`Parsed::Reasoning`], calls are [`Parsed::Call`] events: `Begin` as soon as the name is known,
/// then the arguments JSON in fragments. Markup split across pieces is held back, never sent as
/// text. Text after the calls (whitespace, end markers) is dropped.
#[derive(Debug)]
pub struct CallParser {
    syntax: CallSyntax,
    state: State,
    /// The answer is a required call: it starts with the calls, markers optional.
    calling: bool,
    /// Nothing but whitespace read yet (where Llama 3's `{` and a required call's start count).
    at_start: bool,
    /// Text received and not read yet: a tail that may be the start of a marker, or a part that
    /// needs more text to be read (a harmony header, DeepSeek's name line).
    pending: String,
    /// Reader of the call objects of the JSON-list syntaxes.
    stream: ToolCallStream,
    /// `[` was fed to `stream` (Hermes feeds `,` before each later call).
    list_open: bool,
    /// The end of the JSON value being read.
    json: JsonEnd,
    /// Calls begun in the syntaxes not read by `stream`.
    begun: usize,
    called: bool,
    generic: GenericReader,
}

impl CallParser {
    /// `calling`: the answer starts inside calls (a required call, the grammar applying from the
    /// first token), so there is no text to look through first.
    pub fn new(syntax: CallSyntax, calling: bool) -> Self {
        let state = match syntax {
            CallSyntax::Harmony => State::HarmonyHeader,
            CallSyntax::Generic => State::Generic,
            _ => State::Text,
        };
        Self {
            syntax,
            state,
            calling,
            at_start: true,
            pending: String::new(),
            stream: if syntax == CallSyntax::Llama3 {
                ToolCallStream::with_parameters_key()
            } else {
                ToolCallStream::new()
            },
            list_open: false,
            json: JsonEnd::default(),
            begun: 0,
            called: false,
            generic: GenericReader::default(),
        }
    }

    /// Whether the answer called a function (a call has begun).
    pub fn called(&self) -> bool {
        self.called
    }

    /// What `piece` completes.
    pub fn push(&mut self, piece: &str) -> Vec<Parsed> {
        let mut out = Vec::new();
        if self.state == State::Generic {
            self.generic.push(piece, &mut out);
            self.called |= self.generic.called;
            return out;
        }
        self.pending.push_str(piece);
        while self.step(&mut out) {}
        out
    }

    /// The end of the answer: what was held back, if it is text.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Text => text(&mut out, rest),
            State::HarmonyBody { reasoning: true } if !rest.is_empty() => {
                out.push(Parsed::Reasoning(rest))
            }
            State::HarmonyBody { reasoning: false } => text(&mut out, rest),
            // An answer without any harmony header: plain text.
            State::HarmonyHeader if !rest.contains("<|") => text(&mut out, rest),
            _ => {}
        }
        self.state = State::Done;
        out
    }

    /// Reads what it can of `pending`; false when it needs more text.
    fn step(&mut self, out: &mut Vec<Parsed>) -> bool {
        match self.state {
            State::Text => self.read_text(out),
            State::Between => self.read_between(),
            State::BeforeJson(sink) => {
                let Some(c) = self.pending.trim_start().chars().next() else {
                    self.pending.clear();
                    return false;
                };
                self.pending = self.pending.trim_start().to_owned();
                if sink == Sink::Calls && !matches!(c, '{' | '[') {
                    // Not a JSON call (Llama 3's built-in tools, `<|python_tag|>brave_search.call(..)`):
                    // text after all.
                    self.state = State::Text;
                    self.at_start = false;
                } else {
                    self.json = JsonEnd::default();
                    self.state = State::Json(sink);
                }
                true
            }
            State::Json(sink) => self.read_json(sink, out),
            State::DeepSeekHead => {
                let Some(sep) = self.pending.find(DEEPSEEK_SEP) else {
                    return false;
                };
                let name_from = sep + DEEPSEEK_SEP.len();
                let Some(newline) = self.pending[name_from..].find('\n') else {
                    return false;
                };
                let name = self.pending[name_from..name_from + newline]
                    .trim()
                    .to_owned();
                self.pending.drain(..name_from + newline + 1);
                self.begin(name, out);
                self.state = State::DeepSeekFence { fenced: false };
                true
            }
            State::DeepSeekFence { fenced } => {
                let rest = self.pending.trim_start();
                if rest.is_empty() {
                    return false;
                }
                if !fenced && rest.starts_with('`') {
                    // "```json\n": dropped whole once its line is.
                    let Some(newline) = self.pending.find('\n') else {
                        return false;
                    };
                    self.pending.drain(..=newline);
                    self.state = State::DeepSeekFence { fenced: true };
                } else {
                    self.state = State::BeforeJson(Sink::Arguments(self.begun - 1));
                }
                true
            }
            State::HarmonyHeader => {
                let Some(at) = self.pending.find(HARMONY_MESSAGE) else {
                    return false;
                };
                let header: String = self.pending.drain(..at + HARMONY_MESSAGE.len()).collect();
                self.harmony_header(&header[..at], out);
                true
            }
            State::HarmonyBody { reasoning } => self.read_harmony_body(reasoning, out),
            State::Generic | State::Done => {
                self.pending.clear();
                false
            }
        }
    }

    /// Free text: up to the first call marker, or all of it but a tail that may begin one.
    fn read_text(&mut self, out: &mut Vec<Parsed>) -> bool {
        let markers: &[&str] = match self.syntax {
            CallSyntax::Mistral => &[MISTRAL_CALLS],
            CallSyntax::Hermes => &[HERMES_OPEN],
            CallSyntax::Llama3 => &[PYTHON_TAG],
            CallSyntax::DeepSeek => &[DEEPSEEK_CALLS_BEGIN],
            CallSyntax::Harmony | CallSyntax::Generic => &[],
        };
        if self.at_start {
            let rest = self.pending.trim_start();
            if rest.is_empty() {
                return false;
            }
            let bare_json =
                rest.starts_with('{') && (self.syntax == CallSyntax::Llama3 || self.calling);
            let marked = markers.iter().any(|m| rest.starts_with(m));
            let maybe_marked = markers
                .iter()
                .any(|m| m.len() > rest.len() && m.starts_with(rest));
            if self.calling && !bare_json && maybe_marked {
                // Wait for the rest of the marker.
                return false;
            }
            if bare_json || (self.calling && !marked) {
                // The call begins without its marker.
                self.pending = rest.to_owned();
                self.at_start = false;
                self.enter_calls();
                return true;
            }
            self.at_start = false;
        }
        if let Some((at, marker)) = first_marker(&self.pending, markers) {
            let before: String = self.pending.drain(..at).collect();
            text(out, before);
            self.pending.drain(..marker.len());
            self.enter_calls();
            return true;
        }
        let keep = held_back(&self.pending, markers);
        let sent: String = self.pending.drain(..self.pending.len() - keep).collect();
        text(out, sent);
        false
    }

    /// The state just after the marker that begins the calls.
    fn enter_calls(&mut self) {
        self.state = match self.syntax {
            CallSyntax::Mistral => State::BeforeJson(Sink::Calls),
            CallSyntax::Hermes | CallSyntax::Llama3 => {
                // One call object at a time: the stream reads them as one list.
                self.stream.push(if self.list_open { "," } else { "[" });
                self.list_open = true;
                State::BeforeJson(Sink::Calls)
            }
            CallSyntax::DeepSeek => State::Between,
            CallSyntax::Harmony => State::HarmonyHeader,
            CallSyntax::Generic => State::Generic,
        };
    }

    /// Markup between calls: the next call's beginning, or the end of the calls.
    fn read_between(&mut self) -> bool {
        let markers: &[&str] = match self.syntax {
            CallSyntax::Hermes => &[HERMES_OPEN],
            CallSyntax::DeepSeek => &[DEEPSEEK_CALL_BEGIN, DEEPSEEK_CALLS_END],
            CallSyntax::Harmony => &[HARMONY_START, HARMONY_CALL, HARMONY_RETURN],
            _ => &[],
        };
        let Some((at, marker)) = first_marker(&self.pending, markers) else {
            let keep = held_back(&self.pending, markers);
            self.pending.drain(..self.pending.len() - keep);
            return false;
        };
        self.pending.drain(..at + marker.len());
        match marker {
            HERMES_OPEN => self.enter_calls(),
            DEEPSEEK_CALL_BEGIN => self.state = State::DeepSeekHead,
            HARMONY_START => self.state = State::HarmonyHeader,
            _ => self.state = State::Done,
        }
        true
    }

    /// A JSON value's characters, up to its end.
    fn read_json(&mut self, sink: Sink, out: &mut Vec<Parsed>) -> bool {
        let mut end = None;
        for (i, c) in self.pending.char_indices() {
            if self.json.read(c) {
                end = Some(i + c.len_utf8());
                break;
            }
        }
        let taken: String = self
            .pending
            .drain(..end.unwrap_or(self.pending.len()))
            .collect();
        match sink {
            Sink::Calls => {
                for event in self.stream.push(&taken) {
                    self.called |= matches!(event, ToolCallEvent::Begin { .. });
                    out.push(Parsed::Call(event));
                }
            }
            Sink::Arguments(index) if !taken.is_empty() => {
                out.push(Parsed::Call(ToolCallEvent::Arguments {
                    index,
                    fragment: taken,
                }));
            }
            Sink::Arguments(_) => {}
        }
        if end.is_none() {
            return false;
        }
        self.state = match self.syntax {
            CallSyntax::Hermes | CallSyntax::DeepSeek | CallSyntax::Harmony => State::Between,
            _ => State::Done,
        };
        true
    }

    /// A call of `name` begins (the syntaxes not read by `stream`).
    fn begin(&mut self, name: String, out: &mut Vec<Parsed>) {
        let index = self.begun;
        self.begun += 1;
        self.called = true;
        out.push(Parsed::Call(ToolCallEvent::Begin { index, name }));
    }

    /// A harmony header (`assistant to=functions.f<|channel|>commentary json`, `<|channel|>analysis`):
    /// a message to a function is a call, the analysis channel reasoning, any other text.
    fn harmony_header(&mut self, header: &str, out: &mut Vec<Parsed>) {
        let word = |after: &str| {
            header.find(after).map(|at| {
                header[at + after.len()..]
                    .split(|c: char| c.is_whitespace() || c == '<')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        };
        if let Some(recipient) = word("to=") {
            let name = recipient
                .strip_prefix("functions.")
                .unwrap_or(&recipient)
                .to_owned();
            self.begin(name, out);
            self.state = State::BeforeJson(Sink::Arguments(self.begun - 1));
        } else {
            let reasoning = word(HARMONY_CHANNEL).as_deref() == Some("analysis");
            self.state = State::HarmonyBody { reasoning };
        }
    }

    /// A harmony message's text, up to the marker that ends it.
    fn read_harmony_body(&mut self, reasoning: bool, out: &mut Vec<Parsed>) -> bool {
        const ENDS: [&str; 4] = [HARMONY_END, HARMONY_CALL, HARMONY_RETURN, HARMONY_START];
        let found = first_marker(&self.pending, &ENDS);
        let upto = match found {
            Some((at, _)) => at,
            None => self.pending.len() - held_back(&self.pending, &ENDS),
        };
        let body: String = self.pending.drain(..upto).collect();
        if !body.is_empty() {
            out.push(if reasoning {
                Parsed::Reasoning(body)
            } else {
                Parsed::Text(body)
            });
        }
        let Some((_, marker)) = found else {
            return false;
        };
        self.pending.drain(..marker.len());
        self.state = match marker {
            HARMONY_END => State::Between,
            HARMONY_START => State::HarmonyHeader,
            _ => State::Done,
        };
        true
    }
}

/// Pushes `text` unless empty.
fn text(out: &mut Vec<Parsed>, text: String) {
    if !text.is_empty() {
        out.push(Parsed::Text(text));
    }
}

/// The first of `markers` in `text`: where, and which.
pub(crate) fn first_marker<'m>(text: &str, markers: &[&'m str]) -> Option<(usize, &'m str)> {
    markers
        .iter()
        .filter_map(|m| text.find(m).map(|at| (at, *m)))
        .min_by_key(|(at, _)| *at)
}

/// The length of the longest tail of `text` that is the beginning of one of `markers`: it may be
/// a marker cut by the piece's end, so it waits for the next piece.
pub(crate) fn held_back(text: &str, markers: &[&str]) -> usize {
    let longest = markers.iter().map(|m| m.len()).max().unwrap_or(0);
    let mut from = text.len().saturating_sub(longest);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    text[from..]
        .char_indices()
        .map(|(i, _)| &text[from + i..])
        .find(|tail| markers.iter().any(|m| m.starts_with(tail)))
        .map_or(0, str::len)
}

/// Where a JSON value ends: follows strings and nesting. Arguments and calls are objects or lists,
/// so the value ends with the bracket that closes its first.
#[derive(Debug, Default)]
struct JsonEnd {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonEnd {
    /// Reads `c`; true when it ends the value.
    fn read(&mut self, c: char) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
                return self.depth == 0;
            }
            return false;
        }
        match c {
            '"' => self.in_string = true,
            '{' | '[' => self.depth += 1,
            '}' | ']' => {
                self.depth = self.depth.saturating_sub(1);
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

/// The Generic answer, read character by character: the `tool_calls` list goes to a
/// [`ToolCallStream`], the `response` string out as text, unescaped, as it arrives.
#[derive(Debug, Default)]
struct GenericReader {
    state: GenericState,
    /// The key being read, or last read.
    key: String,
    json: JsonEnd,
    stream: ToolCallStream,
    unescape: Unescape,
    called: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum GenericState {
    /// Before the object's `{`.
    #[default]
    Open,
    /// Before a key (or the object's `}`).
    BeforeKey,
    Key,
    /// Between a key and its value.
    Colon,
    ToolCalls,
    Response,
    /// Another key's value, skipped.
    Skip,
    Done,
}

impl GenericReader {
    fn push(&mut self, piece: &str, out: &mut Vec<Parsed>) {
        let mut calls = String::new();
        let mut response = String::new();
        for c in piece.chars() {
            match self.state {
                GenericState::Open if c == '{' => self.state = GenericState::BeforeKey,
                GenericState::BeforeKey if c == '"' => {
                    self.key.clear();
                    self.unescape = Unescape::default();
                    self.state = GenericState::Key;
                }
                GenericState::BeforeKey if c == '}' => self.state = GenericState::Done,
                GenericState::Key => match self.unescape.read(c) {
                    Unescaped::Char(c) => self.key.push(c),
                    Unescaped::End => self.state = GenericState::Colon,
                    Unescaped::Nothing => {}
                },
                GenericState::Colon if c == ':' || c.is_whitespace() => {}
                GenericState::Colon => {
                    self.json = JsonEnd::default();
                    self.unescape = Unescape::default();
                    self.state = match (self.key.as_str(), c) {
                        ("response", '"') => GenericState::Response,
                        ("tool_calls", _) => {
                            calls.push(c);
                            self.json.read(c);
                            GenericState::ToolCalls
                        }
                        _ => {
                            // A scalar ends at the `,` or `}` after it, which also end it here.
                            if self.json.read(c) || !matches!(c, '{' | '[' | '"') {
                                GenericState::BeforeKey
                            } else {
                                GenericState::Skip
                            }
                        }
                    };
                }
                GenericState::ToolCalls => {
                    calls.push(c);
                    if self.json.read(c) {
                        self.state = GenericState::BeforeKey;
                    }
                }
                GenericState::Response => match self.unescape.read(c) {
                    Unescaped::Char(c) => response.push(c),
                    Unescaped::End => self.state = GenericState::BeforeKey,
                    Unescaped::Nothing => {}
                },
                GenericState::Skip => {
                    let ended = self.json.read(c);
                    self.state = if ended {
                        GenericState::BeforeKey
                    } else {
                        GenericState::Skip
                    };
                }
                _ => {}
            }
        }
        for event in self.stream.push(&calls) {
            self.called |= matches!(event, ToolCallEvent::Begin { .. });
            out.push(Parsed::Call(event));
        }
        text(out, response);
    }
}

/// A JSON string's characters unescaped, one at a time, the opening quote already read.
#[derive(Debug, Default)]
struct Unescape {
    /// After a backslash.
    escaped: bool,
    /// The hex digits of a `\u` escape read so far.
    hex: Option<String>,
    /// A high surrogate waiting for its low half.
    high: Option<u32>,
}

enum Unescaped {
    Char(char),
    /// Part of an escape.
    Nothing,
    /// The closing quote.
    End,
}

impl Unescape {
    fn read(&mut self, c: char) -> Unescaped {
        if let Some(hex) = &mut self.hex {
            hex.push(c);
            if hex.len() < 4 {
                return Unescaped::Nothing;
            }
            let unit = u32::from_str_radix(hex, 16).unwrap_or(0xFFFD);
            self.hex = None;
            return match (self.high.take(), unit) {
                (None, 0xD800..=0xDBFF) => {
                    self.high = Some(unit);
                    Unescaped::Nothing
                }
                (Some(high), 0xDC00..=0xDFFF) => Unescaped::Char(
                    char::from_u32(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00))
                        .unwrap_or(char::REPLACEMENT_CHARACTER),
                ),
                (_, unit) => {
                    Unescaped::Char(char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER))
                }
            };
        }
        if self.escaped {
            self.escaped = false;
            return match c {
                'u' => {
                    self.hex = Some(String::new());
                    Unescaped::Nothing
                }
                'n' => Unescaped::Char('\n'),
                't' => Unescaped::Char('\t'),
                'r' => Unescaped::Char('\r'),
                'b' => Unescaped::Char('\u{8}'),
                'f' => Unescaped::Char('\u{c}'),
                other => Unescaped::Char(other),
            };
        }
        match c {
            '\\' => {
                self.escaped = true;
                Unescaped::Nothing
            }
            '"' => Unescaped::End,
            c => Unescaped::Char(c),
        }
    }
}

#[cfg(test)]
mod tests;
