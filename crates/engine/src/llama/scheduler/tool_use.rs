//! A request's tool calling on the inference thread: waiting for `[TOOL_CALLS]` (with `auto`, the
//! calls' grammar is held until the model begins its calls, a lazy grammar), then turning the
//! calls' text into tool-call events.

use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;

use crate::tool_calls::ToolCallStream;
use crate::GenerationEvent;

pub struct ToolUse {
    /// `[TOOL_CALLS]`.
    trigger: LlamaToken,
    /// The calls' grammar, until the model begins its calls.
    grammar: Option<Matcher>,
    /// Reading the calls (the model began them).
    calls: Option<ToolCallStream>,
    called: usize,
}

impl ToolUse {
    /// The model may call (`auto`): `grammar` constrains what follows `trigger` if it samples it.
    pub fn offered(trigger: LlamaToken, grammar: Matcher) -> Self {
        Self {
            trigger,
            grammar: Some(grammar),
            calls: None,
            called: 0,
        }
    }

    /// The answer is calls (`required`, or a named function): its first token is `trigger`,
    /// already placed, and the sampler already has the grammar.
    pub fn required(trigger: LlamaToken) -> Self {
        Self {
            trigger,
            grammar: None,
            calls: Some(ToolCallStream::new()),
            called: 0,
        }
    }

    /// The grammar that constrains the rest of the answer, when `token` begins the calls.
    pub fn begins(&mut self, token: LlamaToken) -> Option<Matcher> {
        if token != self.trigger || self.calls.is_some() {
            return None;
        }
        self.calls = Some(ToolCallStream::new());
        self.grammar.take()
    }

    /// Whether the text generated now is calls.
    pub fn is_calling(&self) -> bool {
        self.calls.is_some()
    }

    /// Whether a call began.
    pub fn called(&self) -> bool {
        self.called > 0
    }

    /// The events `text` of the calls completes.
    pub fn events(&mut self, text: &str) -> Vec<GenerationEvent> {
        let Some(stream) = self.calls.as_mut() else {
            return Vec::new();
        };
        let events = stream.generation_events(text);
        self.called += events
            .iter()
            .filter(|e| matches!(e, GenerationEvent::ToolCall { .. }))
            .count();
        events
    }
}
