//! The chat template prompts are rendered with, and where it came from: `--chat-template` (a
//! format llama.cpp knows by name, or a Jinja file), else the GGUF's own template, else Mistral's
//! `[INST]` format. llama.cpp applies the formats it knows itself (it recognises a GGUF template
//! by its text); any other Jinja template is rendered here the way Hugging Face's
//! `apply_chat_template` renders it (minijinja, with Python's string methods), as llama-server
//! does with its own Jinja engine.

use std::path::Path;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

use super::jinja::JinjaTemplate;
use crate::EngineError;

/// The format of Mistral-7B-Instruct v0.3, the default model: used when the file has no template.
const FALLBACK: &str = "mistral-v3";

/// Some of the names llama.cpp knows (its `llama_chat_builtin_templates` lists them all), for the
/// message that refuses an unknown one.
const KNOWN_NAMES: &str =
    "chatml, gemma, llama2, llama3, mistral-v1, mistral-v3, mistral-v7, phi3, phi4, \
                           deepseek3, command-r, granite, gpt-oss";

/// A template ready to apply.
pub enum ChatTemplate {
    /// A format llama.cpp implements.
    Builtin(LlamaChatTemplate),
    /// A Jinja template rendered here.
    Jinja(Box<JinjaTemplate>),
}

/// A chat template and a description of where it came from, for the start-up log.
pub struct ChosenTemplate {
    pub template: ChatTemplate,
    pub source: String,
    /// The template's own text, where its markup is looked for: its source when it has one (a
    /// GGUF or Jinja template, every branch of it), and always a conversation it rendered.
    pub own_text: String,
    /// The Jinja source, when the template has one (the file's own, even where llama.cpp applies
    /// it, or a `--chat-template` file): tool conversations are rendered with it.
    pub jinja: Option<String>,
}

impl ChatTemplate {
    /// `requested` (`--chat-template`: a name llama.cpp knows or a Jinja file), else the model
    /// file's own template, else Mistral's format. A requested template that is neither, or that
    /// cannot render a short conversation, is refused.
    pub fn choose(
        llama: &LlamaModel,
        requested: Option<&str>,
    ) -> Result<ChosenTemplate, EngineError> {
        if let Some(requested) = requested {
            return Self::requested(llama, requested);
        }
        let Ok(own) = llama.chat_template(None) else {
            tracing::warn!(
                "the model file has no chat template; using Mistral's [INST] format ({FALLBACK}). \
                 For another model family set --chat-template (e.g. gemma, chatml, or a Jinja file)"
            );
            return Ok(Self::fallback(llama, "the model file has none"));
        };
        let text = own.to_str().unwrap_or_default().to_owned();
        let builtin = Self::Builtin(own.clone());
        let jinja = JinjaTemplate::new(llama, text.clone()).map(|t| Self::Jinja(Box::new(t)));
        // llama.cpp's rendering of a template it recognises drops a thinking section the
        // template opens for the answer (DeepSeek-R1's `<｜Assistant｜><think>\n`): the model
        // would answer without thinking, or think where its text is expected.
        let opens_thinking = |probe: &str| probe.trim_end().ends_with("<think>");
        let jinja_thinks = jinja
            .as_ref()
            .ok()
            .and_then(|j| j.probe(llama).ok())
            .is_some_and(|probe| opens_thinking(&probe));
        let builtin_probe = builtin.probe(llama).ok();
        if let Some(probe) = builtin_probe.filter(|p| !jinja_thinks || opens_thinking(p)) {
            return Ok(ChosenTemplate {
                template: builtin,
                source: "the model file's (applied by llama.cpp)".into(),
                own_text: text.clone() + &probe,
                jinja: Some(text),
            });
        }
        match jinja.map(|j| (j.probe(llama), j)) {
            Ok((Ok(probe), jinja)) => Ok(ChosenTemplate {
                template: jinja,
                source: "the model file's (Jinja)".into(),
                own_text: text.clone() + &probe,
                jinja: Some(text),
            }),
            _ => {
                tracing::warn!(
                    "the model file's chat template cannot be applied; using Mistral's [INST] \
                     format ({FALLBACK}). Set --chat-template to choose another"
                );
                Ok(Self::fallback(llama, "the model file's cannot be applied"))
            }
        }
    }

    fn requested(llama: &LlamaModel, requested: &str) -> Result<ChosenTemplate, EngineError> {
        let refused =
            |why: String| EngineError::Template(format!("--chat-template {requested}: {why}"));
        let path = Path::new(requested);
        let mut own_text = String::new();
        let mut jinja = None;
        let (template, source) = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| refused(format!("cannot be read ({e})")))?;
            own_text.push_str(&text);
            jinja = Some(text.clone());
            let template = JinjaTemplate::new(llama, text).map_err(|e| {
                refused(format!(
                    "is not a Jinja template that can be rendered ({e})"
                ))
            })?;
            (
                Self::Jinja(Box::new(template)),
                format!("{requested} (Jinja, --chat-template)"),
            )
        } else {
            let template = LlamaChatTemplate::new(requested)
                .map_err(|_| refused("contains a NUL character".into()))?;
            (
                Self::Builtin(template),
                format!("{requested} (llama.cpp, --chat-template)"),
            )
        };
        let Ok(probe) = template.probe(llama) else {
            return Err(refused(match template {
                Self::Builtin(_) => format!(
                    "no such file, and not a template name llama.cpp knows ({KNOWN_NAMES}, ...)"
                ),
                Self::Jinja(_) => "the Jinja template cannot render a short conversation".into(),
            }));
        };
        own_text.push_str(&probe);
        Ok(ChosenTemplate {
            template,
            source,
            own_text,
            jinja,
        })
    }

    fn fallback(llama: &LlamaModel, why: &str) -> ChosenTemplate {
        let template = Self::Builtin(LlamaChatTemplate::new(FALLBACK).expect("no NUL in literal"));
        ChosenTemplate {
            own_text: template.probe(llama).unwrap_or_default(),
            template,
            source: format!("{FALLBACK} (fallback: {why})"),
            jinja: None,
        }
    }

    /// A system message, a user turn, an answer and the next user turn, rendered: whether the
    /// template works, and text of its own.
    fn probe(&self, llama: &LlamaModel) -> Result<String, EngineError> {
        let probe = [
            ("system", "s"),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "bye"),
        ]
        .map(|(role, content)| (role, content.to_owned()));
        self.apply(llama, &probe, true)
    }

    /// `messages` (role, content) rendered, ending with the assistant's cue when `add_assistant`.
    pub fn apply(
        &self,
        llama: &LlamaModel,
        messages: &[(&str, String)],
        add_assistant: bool,
    ) -> Result<String, EngineError> {
        match self {
            Self::Builtin(template) => {
                let chat = messages
                    .iter()
                    .map(|(role, content)| {
                        LlamaChatMessage::new((*role).to_owned(), content.clone())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        EngineError::InvalidPrompt("a message contains a NUL character".into())
                    })?;
                llama
                    .apply_chat_template(template, &chat, add_assistant)
                    .map_err(|e| EngineError::Template(format!("chat template failed: {e}")))
            }
            Self::Jinja(template) => template.render(messages, add_assistant),
        }
    }
}
