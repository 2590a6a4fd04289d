//! Jinja chat templates rendered the way Hugging Face's `apply_chat_template` renders them
//! (minijinja, with Python's string methods, `raise_exception`, `strftime_now`, and `tojson` as
//! Python's `json.dumps(..., ensure_ascii=False)` writes), as llama-server does with its own Jinja
//! engine: the whole context a template may read (`messages` with their `tool_calls`, `tools`,
//! `add_generation_prompt`, `bos_token`, and a request's template arguments such as
//! `enable_thinking`).

use llama_cpp_2::model::LlamaModel;
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde_json::Value;

use super::pyjson::python_json_indented;
use crate::EngineError;

/// A Jinja chat template with the model's special-token texts.
pub struct JinjaTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS itself: a rendering that begins with its text loses it, so that the
    /// prompt does not begin with two.
    strip_bos: bool,
}

impl JinjaTemplate {
    pub fn new(llama: &LlamaModel, source: String) -> Result<Self, JinjaError> {
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
        // minijinja's own `tojson` escapes `<`, `>`, `&` and `'` for HTML and writes `,`/`:`
        // without spaces: not the text the model was trained on.
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source)?;
        Ok(Self {
            env,
            bos_token: text_of(vocab.bos()),
            eos_token: text_of(vocab.eos()),
            strip_bos: vocab.should_add_bos(),
        })
    }

    pub fn render(
        &self,
        messages: &[(&str, String)],
        add_assistant: bool,
    ) -> Result<String, EngineError> {
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| context! { role => role, content => content })
            .collect();
        self.render_context(context! {
            messages => messages,
            add_generation_prompt => add_assistant,
        })
    }

    /// The template rendered with a whole Hugging Face context (`messages`, `tools`,
    /// `add_generation_prompt`, template arguments): the special-token texts are added.
    pub fn render_json(&self, context: &Value) -> Result<String, EngineError> {
        self.render_context(JinjaValue::from_serialize(context))
    }

    fn render_context(&self, context: JinjaValue) -> Result<String, EngineError> {
        let rendered = self
            .env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                    ..context
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

/// `tojson` as Hugging Face defines it for chat templates: `json.dumps(value, ensure_ascii=False,
/// indent=indent)`, marked safe.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let value = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::BadSerialization, e.to_string()))?;
    Ok(JinjaValue::from_safe_string(python_json_indented(
        &value, indent,
    )))
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
