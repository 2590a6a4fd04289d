//! The chat template prompts are rendered with, and where it came from: `--chat-template` (a
//! format llama.cpp knows by name, or a Jinja file), else the GGUF's own template, else Mistral's
//! `[INST]` format. llama.cpp applies the formats it knows itself (it recognises a GGUF template
//! by its text); any other Jinja template is rendered here the way Hugging Face's
//! `apply_chat_template` renders it (minijinja, with Python's string methods), as llama-server
//! does with its own Jinja engine.

use std::path::Path;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};

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

/// A Jinja chat template with the model's special-token texts.
pub struct JinjaTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS itself: a rendering that begins with its text loses it, so that the
    /// prompt does not begin with two.
    strip_bos: bool,
}

/// A chat template and a description of where it came from, for the start-up log.
pub struct ChosenTemplate {
    pub template: ChatTemplate,
    pub source: String,
    /// The template's own text, where its markup is looked for: its source when it has one (a
    /// GGUF or Jinja template, every branch of it), and always a conversation it rendered.
    pub own_text: String,
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
        if let Ok(probe) = builtin.probe(llama) {
            return Ok(ChosenTemplate {
                template: builtin,
                source: "the model file's (applied by llama.cpp)".into(),
                own_text: text + &probe,
            });
        }
        let jinja = JinjaTemplate::new(llama, text.clone()).map(|t| Self::Jinja(Box::new(t)));
        match jinja.map(|j| (j.probe(llama), j)) {
            Ok((Ok(probe), jinja)) => Ok(ChosenTemplate {
                template: jinja,
                source: "the model file's (Jinja)".into(),
                own_text: text + &probe,
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
        let (template, source) = if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| refused(format!("cannot be read ({e})")))?;
            own_text.push_str(&text);
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
        })
    }

    fn fallback(llama: &LlamaModel, why: &str) -> ChosenTemplate {
        let template = Self::Builtin(LlamaChatTemplate::new(FALLBACK).expect("no NUL in literal"));
        ChosenTemplate {
            own_text: template.probe(llama).unwrap_or_default(),
            template,
            source: format!("{FALLBACK} (fallback: {why})"),
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

impl JinjaTemplate {
    fn new(llama: &LlamaModel, source: String) -> Result<Self, JinjaError> {
        let vocab = llama.vocab();
        let text_of = |token| {
            vocab
                .text(token)
                .and_then(|t| t.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let mut env = Environment::new();
        // Hugging Face's settings: blocks swallow their newline and leading whitespace.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<(), JinjaError> {
                Err(
                    JinjaError::new(ErrorKind::InvalidOperation, message.clone())
                        .with_source(Raised(message)),
                )
            },
        );
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_template_owned("chat", source)?;
        Ok(Self {
            env,
            bos_token: text_of(vocab.bos()),
            eos_token: text_of(vocab.eos()),
            strip_bos: vocab.should_add_bos(),
        })
    }

    fn render(
        &self,
        messages: &[(&str, String)],
        add_assistant: bool,
    ) -> Result<String, EngineError> {
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| context! { role => role, content => content })
            .collect();
        let rendered = self
            .env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => add_assistant,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                })
            })
            .map_err(|e| match raised(&e) {
                Some(message) => EngineError::TemplateRefused(message.to_owned()),
                None => EngineError::Template(format!("chat template failed: {e}")),
            })?;
        Ok(match rendered.strip_prefix(self.bos_token.as_str()) {
            Some(rest) if self.strip_bos && !self.bos_token.is_empty() => rest.to_owned(),
            _ => rendered,
        })
    }
}

/// A template's own `raise_exception`: it refuses the conversation it was given.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// The message of the `raise_exception` that ended a rendering, if one did (minijinja wraps it
/// in the errors of the calls and blocks around it).
fn raised(error: &JinjaError) -> Option<&str> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(Raised(message)) = error.downcast_ref::<Raised>() {
            return Some(message);
        }
        source = error.source();
    }
    None
}

/// Today's date for templates that print it (Llama 3's), in the few formats they use.
fn strftime_now(format: &str) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    format_date(civil_date(days), format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `format` with `%d`, `%m`, `%Y`, `%B` and `%b` replaced, as Python's `strftime` writes them.
fn format_date((year, month, day): (i64, i64, i64), format: &str) -> String {
    let name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", name)
        .replace("%b", &name[..3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_the_calendar_days_since_1970() {
        // Walked day by day with the Gregorian calendar's month lengths, from 1970 to 2100
        // (2000 a leap year, 2100 not).
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..47_847 {
            assert_eq!(civil_date(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                (day, month) = (1, month + 1);
                if month > 12 {
                    (month, year) = (1, year + 1);
                }
            }
        }
    }

    #[test]
    fn the_formats_templates_use_are_written_as_python_writes_them() {
        // Llama 3.1's template: strftime_now("%d %b %Y"); others use %B and %m.
        assert_eq!(format_date((2024, 7, 5), "%d %b %Y"), "05 Jul 2024");
        assert_eq!(format_date((2024, 7, 5), "%d %B %Y"), "05 July 2024");
        assert_eq!(format_date((2026, 12, 6), "%Y-%m-%d"), "2026-12-06");
        assert_eq!(civil_date(19_723), (2024, 1, 1));
    }
}
