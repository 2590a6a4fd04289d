//! Which family's chat format a model speaks, read from its chat template: how it calls functions
//! ([`CallSyntax`]) and whether it thinks before it answers. A model family is data here: its
//! template says what it is, `--chat-template NAME|FILE` overrides it by giving another template.

use crate::tool_calls::formats::CallSyntax;

/// The markers of a thinking section (`<think>...</think>` of Qwen3 and the DeepSeek-R1
/// distills). gpt-oss's analysis channel is part of its harmony format instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkMarkers {
    pub open: String,
    pub close: String,
}

/// A model's chat format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFormat {
    pub calls: CallSyntax,
    pub thinking: Option<ThinkMarkers>,
}

impl ChatFormat {
    /// The format of a model whose template is `template` (its Jinja source, else a rendering
    /// of it): `mistral_tokens`, the vocabulary has Mistral's tool tokens; `native`, the template
    /// writes the function list and earlier calls itself (else the generic format describes the
    /// functions in the system text).
    pub fn detect(template: &str, mistral_tokens: bool, native: bool) -> Self {
        let has = |text: &str| template.contains(text);
        let calls = if mistral_tokens {
            CallSyntax::Mistral
        } else if !native {
            CallSyntax::Generic
        } else if has("<tool_call>") {
            CallSyntax::Hermes
        } else if has("<｜tool▁calls▁begin｜>") {
            CallSyntax::DeepSeek
        } else if has("<|channel|>") && has("<|call|>") {
            CallSyntax::Harmony
        } else if has("<|python_tag|>") || has("ipython") {
            CallSyntax::Llama3
        } else {
            CallSyntax::Generic
        };
        let thinking = (has("</think>") && calls != CallSyntax::Harmony).then(|| ThinkMarkers {
            open: "<think>".into(),
            close: "</think>".into(),
        });
        Self { calls, thinking }
    }

    /// How the model's thinking is told apart, for the start-up log.
    pub fn reasoning_name(&self) -> &str {
        match (&self.thinking, self.calls) {
            (Some(markers), _) => &markers.open,
            (None, CallSyntax::Harmony) => "harmony-analysis-channel",
            (None, _) => "none",
        }
    }
}

/// The syntax's name in logs and docs.
pub fn syntax_name(syntax: CallSyntax) -> &'static str {
    match syntax {
        CallSyntax::Mistral => "mistral",
        CallSyntax::Hermes => "hermes",
        CallSyntax::Llama3 => "llama3",
        CallSyntax::DeepSeek => "deepseek",
        CallSyntax::Harmony => "harmony",
        CallSyntax::Generic => "generic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_read_from_its_template() {
        let template = |name: &str| {
            std::fs::read_to_string(format!(
                "{}/../testmodel/src/templates/{name}.jinja",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let cases = [
            ("qwen2.5", CallSyntax::Hermes, false),
            ("qwen3", CallSyntax::Hermes, true),
            ("hermes2pro", CallSyntax::Hermes, false),
            ("llama3.1", CallSyntax::Llama3, false),
            ("gpt-oss", CallSyntax::Harmony, false),
            ("deepseek-r1", CallSyntax::DeepSeek, true),
        ];
        for (name, calls, thinks) in cases {
            let format = ChatFormat::detect(&template(name), false, true);
            assert_eq!(format.calls, calls, "{name}");
            assert_eq!(format.thinking.is_some(), thinks, "{name}");
        }
        let gemma = ChatFormat::detect(&template("gemma3"), false, false);
        assert_eq!(gemma.calls, CallSyntax::Generic);
        let mistral = ChatFormat::detect(&template("mistral-v0.3"), true, true);
        assert_eq!(mistral.calls, CallSyntax::Mistral);
    }
}
