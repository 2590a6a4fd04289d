//! Tool calls read from the text of an upstream's answer, when the gateway rendered the prompt
//! itself (a prompt of token ids): the upstream only generates text, and the calls in it are read
//! here, as the embedded engine reads its own. With `auto` the answer is text unless it begins
//! with the calls token (which the upstream is asked to send as text); with `required` (or a named
//! function) the prompt ends with that token and the whole answer is the list of calls.

use crate::tool_calls::ToolCallStream;
use crate::GenerationEvent;

pub enum ToolText {
    /// `auto`, undecided: the answer so far, which is still a beginning of `trigger`.
    Undecided { trigger: String, held: String },
    /// The answer is text.
    Text,
    /// The answer is calls.
    Calls {
        stream: ToolCallStream,
        called: bool,
    },
}

impl ToolText {
    /// The model may begin calls with `trigger` (`auto`).
    pub fn offered(trigger: &str) -> Self {
        Self::Undecided {
            trigger: trigger.to_owned(),
            held: String::new(),
        }
    }

    /// The answer is calls from its first character.
    pub fn calling() -> Self {
        Self::Calls {
            stream: ToolCallStream::new(),
            called: false,
        }
    }

    /// Whether a call began.
    pub fn called(&self) -> bool {
        matches!(self, Self::Calls { called: true, .. })
    }

    /// The events `piece` of the answer completes.
    pub fn push(&mut self, piece: &str) -> Vec<GenerationEvent> {
        match self {
            Self::Text => vec![GenerationEvent::Text(piece.to_owned())],
            Self::Calls { stream, called } => {
                let events = stream.generation_events(piece);
                *called |= events
                    .iter()
                    .any(|e| matches!(e, GenerationEvent::ToolCall { .. }));
                events
            }
            Self::Undecided { trigger, held } => {
                held.push_str(piece);
                let start = held.trim_start();
                if let Some(calls) = start.strip_prefix(trigger.as_str()) {
                    let calls = calls.to_owned();
                    *self = Self::calling();
                    self.push(&calls)
                } else if trigger.starts_with(start) {
                    Vec::new()
                } else {
                    let text = std::mem::take(held);
                    *self = Self::Text;
                    vec![GenerationEvent::Text(text)]
                }
            }
        }
    }

    /// What is still held at the end of the answer: text that only began like the trigger.
    pub fn finish(&mut self) -> Vec<GenerationEvent> {
        match std::mem::replace(self, Self::Text) {
            Self::Undecided { held, .. } if !held.is_empty() => vec![GenerationEvent::Text(held)],
            other => {
                *self = other;
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(events: &[GenerationEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_answer_that_begins_with_the_trigger_is_calls_wherever_the_pieces_are_cut() {
        let answer = " [TOOL_CALLS] [{\"name\": \"now\", \"arguments\": {}}]";
        for cut in 1..answer.len() {
            if !answer.is_char_boundary(cut) {
                continue;
            }
            let mut reader = ToolText::offered("[TOOL_CALLS]");
            let mut events = reader.push(&answer[..cut]);
            events.extend(reader.push(&answer[cut..]));
            events.extend(reader.finish());
            assert!(reader.called(), "cut {cut}");
            assert!(texts(&events).is_empty(), "cut {cut}: {events:?}");
            assert!(matches!(&events[0], GenerationEvent::ToolCall { name, .. } if name == "now"));
        }
    }

    #[test]
    fn other_answers_are_text_held_only_while_they_could_still_be_calls() {
        let mut reader = ToolText::offered("[TOOL_CALLS]");
        assert!(reader.push("[TOOL").is_empty());
        assert_eq!(texts(&reader.push("S are")), "[TOOLS are");
        assert_eq!(texts(&reader.push(" 도구")), " 도구");
        assert!(!reader.called());
        let mut short = ToolText::offered("[TOOL_CALLS]");
        assert!(short.push("[").is_empty());
        assert_eq!(texts(&short.finish()), "[");
    }
}
