//! Tool calls as they are generated: the model writes a JSON list of calls
//! (`[{"name": "get_weather", "arguments": {"city": "Seoul"}}, ...]`), and clients want each call
//! as soon as its name is known, then its arguments piece by piece (OpenAI's streamed
//! `delta.tool_calls`). [`ToolCallStream`] reads the list as it arrives, in pieces cut anywhere,
//! and says when a call begins and which text belongs to its arguments. It relies on JSON
//! syntax only, not on the grammar that produced it. [`calls_schema`] is what the list must
//! follow: the embedded engine's grammar is built from it, the upstream gets it as `json_schema`.

use serde_json::{json, Value};

use crate::{GenerationEvent, ToolChoice, Tools};

pub mod formats;
mod schema_refs;

/// What the list read so far says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolCallEvent {
    /// Call `index` (from 0) of function `name` begins.
    Begin { index: usize, name: String },
    /// More of call `index`'s arguments, JSON text.
    Arguments { index: usize, fragment: String },
}

/// An incremental reader of a JSON list of `{"name": ..., "arguments": ...}` objects.
#[derive(Debug, Default)]
pub struct ToolCallStream {
    /// Nesting depth: 1 inside the list, 2 inside a call, more inside its arguments.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The key last read at depth 2, and the string being read.
    key: String,
    text: String,
    /// The key just read is waiting for its value.
    after_colon: bool,
    reading: Reading,
    /// Calls begun so far.
    begun: usize,
    /// The call being read has not been sent yet (its name is not read yet).
    pending: bool,
    /// Arguments text read before the name was (when a model puts `arguments` first).
    held: String,
    /// `parameters` is read as the arguments too (Llama 3.1's key).
    parameters: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Reading {
    #[default]
    Other,
    /// A key string at depth 2.
    Key,
    /// The `name` value string.
    Name,
    /// The `arguments` value, down to this depth.
    Arguments { from: usize },
}

impl ToolCallStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that also takes `parameters` for the arguments: Llama 3.1 writes its calls so.
    pub fn with_parameters_key() -> Self {
        Self {
            parameters: true,
            ..Self::default()
        }
    }

    /// The generation events `piece` completes: a call's start (with a new id), its arguments.
    pub fn generation_events(&mut self, piece: &str) -> Vec<GenerationEvent> {
        self.push(piece)
            .into_iter()
            .map(|event| match event {
                ToolCallEvent::Begin { index, name } => GenerationEvent::ToolCall {
                    index,
                    id: new_call_id(),
                    name,
                },
                ToolCallEvent::Arguments { index, fragment } => {
                    GenerationEvent::ToolArguments { index, fragment }
                }
            })
            .collect()
    }

    /// The events `piece` completes.
    pub fn push(&mut self, piece: &str) -> Vec<ToolCallEvent> {
        let mut events = Vec::new();
        let mut arguments = String::new();
        for c in piece.chars() {
            if let Reading::Arguments { from } = self.reading {
                if self.ends_arguments(c, from) {
                    self.reading = Reading::Other;
                } else {
                    arguments.push(c);
                    self.track(c);
                    continue;
                }
            }
            if !arguments.is_empty() {
                self.flush(&mut arguments, &mut events);
            }
            self.read(c, &mut events);
        }
        self.flush(&mut arguments, &mut events);
        events
    }

    /// Whether `c` ends an arguments value begun at depth `from` (a `,` or `}` of the call).
    fn ends_arguments(&self, c: char, from: usize) -> bool {
        !self.in_string && self.depth == from && matches!(c, ',' | '}')
    }

    /// Sends arguments text: now if the call's name was sent, else when it is.
    fn flush(&mut self, arguments: &mut String, events: &mut Vec<ToolCallEvent>) {
        if arguments.is_empty() {
            return;
        }
        if self.pending {
            self.held.push_str(arguments);
        } else {
            events.push(ToolCallEvent::Arguments {
                index: self.begun - 1,
                fragment: std::mem::take(arguments),
            });
        }
        arguments.clear();
    }

    /// One character outside an arguments value.
    fn read(&mut self, c: char, events: &mut Vec<ToolCallEvent>) {
        if self.in_string {
            self.track(c);
            if self.in_string {
                if matches!(self.reading, Reading::Key | Reading::Name) {
                    self.text.push(c);
                }
                return;
            }
            // The string closed.
            match self.reading {
                Reading::Key => self.key = std::mem::take(&mut self.text),
                Reading::Name => self.name_read(events),
                _ => {}
            }
            self.reading = Reading::Other;
            return;
        }
        match c {
            '{' if self.depth == 1 => {
                self.depth = 2;
                self.key.clear();
                self.after_colon = false;
                self.held.clear();
                self.begun += 1;
                // Not sent until the name is known.
                self.pending = true;
            }
            '"' if self.depth == 2 && !self.after_colon => {
                self.in_string = true;
                self.reading = Reading::Key;
                self.text.clear();
            }
            ':' if self.depth == 2 => self.after_colon = true,
            ',' if self.depth == 2 => self.after_colon = false,
            '}' if self.depth == 2 => {
                self.depth = 1;
                // A call without a name is never sent; its arguments are dropped with it.
                self.pending = false;
                self.held.clear();
            }
            c if self.depth == 2 && self.after_colon && !c.is_whitespace() => {
                self.after_colon = false;
                match self.key.as_str() {
                    "name" if c == '"' => {
                        self.in_string = true;
                        self.reading = Reading::Name;
                        self.text.clear();
                    }
                    key if key == "arguments" || (self.parameters && key == "parameters") => {
                        self.reading = Reading::Arguments { from: 2 };
                        self.track(c);
                        let mut first = c.to_string();
                        self.flush(&mut first, events);
                    }
                    _ => self.track(c),
                }
            }
            _ => self.track(c),
        }
    }

    /// The name string closed: the call begins, with any arguments read before it.
    fn name_read(&mut self, events: &mut Vec<ToolCallEvent>) {
        let name = std::mem::take(&mut self.text);
        self.pending = false;
        let index = self.begun - 1;
        events.push(ToolCallEvent::Begin { index, name });
        if !self.held.is_empty() {
            events.push(ToolCallEvent::Arguments {
                index,
                fragment: std::mem::take(&mut self.held),
            });
        }
    }

    /// Follows strings and nesting.
    fn track(&mut self, c: char) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
            }
            return;
        }
        match c {
            '"' => self.in_string = true,
            '[' | '{' => self.depth += 1,
            ']' | '}' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// A fresh call id: nine letters and digits, the form Mistral's chat template requires of the
/// ids it is given back.
pub fn new_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..9)
        .map(|_| {
            // xorshift: ids of calls made in the same nanosecond still differ by the counter.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// The JSON schema of the list of calls: objects of the offered functions' names and arguments
/// valid for their schemas; one call unless parallel calls are allowed; only the named function
/// when one is.
pub fn calls_schema(tools: &Tools) -> Value {
    // Each function's `$defs` move to the list's root, its `$ref`s rewritten to match.
    let mut defs = serde_json::Map::new();
    let choices: Vec<Value> = tools
        .functions
        .iter()
        .enumerate()
        .filter(|(_, f)| match &tools.choice {
            ToolChoice::Function(name) => &f.name == name,
            _ => true,
        })
        .map(|(i, f)| {
            let mut arguments = f.parameters.clone();
            if arguments.as_object().is_none_or(|o| o.is_empty()) {
                arguments = json!({"type": "object"});
            }
            let arguments = schema_refs::hoist(&format!("function{i}"), arguments, &mut defs);
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut list = json!({"type": "array", "items": {"anyOf": choices}, "minItems": 1});
    if !tools.parallel {
        list["maxItems"] = json!(1);
    }
    if !defs.is_empty() {
        list["$defs"] = Value::Object(defs);
    }
    list
}

#[cfg(test)]
pub(crate) mod tests;
