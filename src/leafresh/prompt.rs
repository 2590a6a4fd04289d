//! What the model is asked for: the Korean instruction, the chat messages of both endpoints, and
//! the shape of the answer (its JSON schema, the llama.cpp grammar that enforces it, and the
//! largest string bounds whose worst case fits the token budget).
//!
//! The original asked for free-form JSON and failed whenever `max_new_tokens` cut the answer
//! short. Here the grammar caps every string so that even the worst-case answer fits the budget:
//! the model cannot run out of tokens before the closing brace.
//!
//! The texts are data (`prompt.json`, embedded at build time), which the benchmark tools read
//! too. The instruction asks for the answer's fields in words, with nothing to copy: an earlier
//! one showed a JSON skeleton with placeholder values ("챌린지 제목"), and small models gave it
//! back as their answer every time. The grammar already fixes the shape.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{json, Value};

use super::categories::Category;
use super::sessions::Turn;
use super::topic::ValidBaseInfo;
use crate::engine::chat::ChatMessage;

/// How many challenges an answer has.
pub const CHALLENGE_COUNT: usize = 3;

/// `prompt.json`: the prompt's texts.
#[derive(Debug, Deserialize)]
struct PromptTexts {
    /// The instruction's lines.
    instruction: Vec<String>,
    /// Between the instruction and the request in the first user message.
    separator: String,
    /// A base-info request: `{location}`, `{work_type}`, `{category}`.
    base_info_request: String,
    /// A free-text request: `{category}`, `{message}`.
    free_text_request: String,
}

static TEXTS: LazyLock<PromptTexts> = LazyLock::new(|| {
    serde_json::from_str(include_str!("prompt.json"))
        .expect("src/leafresh/prompt.json is embedded at build time and must parse")
});

static INSTRUCTION_TEXT: LazyLock<String> = LazyLock::new(|| TEXTS.instruction.join("\n"));

/// The instruction that begins every prompt of both endpoints, byte for byte, so that its KV
/// cache can be computed once and reused. Everything that varies per request comes after it.
pub fn instruction() -> &'static str {
    &INSTRUCTION_TEXT
}

/// `template` with each `{name}` replaced by its value in `values`, in one pass over the template:
/// a value (client text) is never searched for names itself.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Messages for a base-info request: one user message, instruction first.
pub fn base_info_messages(req: &ValidBaseInfo) -> Vec<ChatMessage> {
    vec![ChatMessage::user(with_instruction(&base_info_request(req)))]
}

/// Messages for a free-text request: the instruction goes into the FIRST user message (the oldest
/// history turn's, or the new request's when there is no history), then the history as
/// alternating user/assistant messages, then the new request.
///
/// The instruction is not a system message because chat templates differ in where they put one
/// (Mistral's own Jinja template moves it into the last user turn), and only a prompt that begins
/// with the same text on every turn can reuse the instruction's cached cells. To keep the history
/// within the context window, the caller passes a shorter tail of the history (`&history[k..]`);
/// the result only depends on the slice given.
pub fn free_text_messages(
    history: &[Turn],
    message: &str,
    category: &Category,
) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(2 * history.len() + 1);
    for turn in history {
        messages.push(ChatMessage::user(turn.user.clone()));
        messages.push(ChatMessage::assistant(turn.assistant.clone()));
    }
    messages.push(ChatMessage::user(free_text_request(message, category)));
    messages[0].content = with_instruction(&messages[0].content);
    messages
}

/// A base-info prompt for a made-up request: what the engine computes before serving, so that
/// every real prompt (which begins with the same instruction) finds the instruction cached.
pub fn warm_up_messages() -> Vec<ChatMessage> {
    let request = fill(
        &TEXTS.base_info_request,
        &[
            ("location", "도시"),
            ("work_type", "사무직"),
            ("category", "제로웨이스트"),
        ],
    );
    vec![ChatMessage::user(with_instruction(&request))]
}

/// The per-request part of a base-info prompt (without the instruction). Store this as
/// `Turn::user` so that replaying the turn reproduces the prompt byte for byte.
pub fn base_info_request(req: &ValidBaseInfo) -> String {
    fill(
        &TEXTS.base_info_request,
        &[
            ("location", &req.location),
            ("work_type", &req.work_type),
            ("category", &req.category.label),
        ],
    )
}

/// The per-request part of a free-text prompt (without the instruction). Store this as
/// `Turn::user` so that replaying the turn reproduces the prompt byte for byte.
pub fn free_text_request(message: &str, category: &Category) -> String {
    fill(
        &TEXTS.free_text_request,
        &[("category", &category.label), ("message", message)],
    )
}

fn with_instruction(request: &str) -> String {
    format!("{}{}{request}", instruction(), TEXTS.separator)
}

/// Maximum lengths, in characters, of the answer's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerBounds {
    pub recommend_chars: usize,
    pub title_chars: usize,
    pub description_chars: usize,
}

/// Worst-case tokens per content character: the grammar allows only characters of at most 3
/// UTF-8 bytes, and a byte-fallback tokenizer may spend one token per byte.
const TOKENS_PER_CHAR: usize = 3;
/// The end-of-generation token.
const EOG_TOKENS: usize = 1;

impl AnswerBounds {
    /// The largest bounds `fitting` hands out: enough for a sentence, a title and a description.
    pub const MAX: AnswerBounds = AnswerBounds {
        recommend_chars: 100,
        title_chars: 30,
        description_chars: 120,
    };
    /// Below this an answer is not worth generating.
    pub const MIN: AnswerBounds = AnswerBounds {
        recommend_chars: 10,
        title_chars: 5,
        description_chars: 10,
    };

    /// `MIN`: the smallest bounds `fitting` hands out.
    pub const fn minimum() -> AnswerBounds {
        Self::MIN
    }

    /// `MAX`: the largest bounds `fitting` hands out.
    pub const fn maximum() -> AnswerBounds {
        Self::MAX
    }

    /// The largest bounds (up to `MAX`) whose worst case fits `max_new_tokens`, with the content
    /// budget shared roughly 20% recommend, 20% titles, 60% descriptions; `None` when not even
    /// `MIN` fits.
    pub fn fitting(max_new_tokens: usize) -> Option<AnswerBounds> {
        let budget = max_new_tokens.checked_sub(fixed_tokens())? / TOKENS_PER_CHAR;
        let (min, max) = (Self::MIN, Self::MAX);
        if budget < min.content_chars() {
            return None;
        }
        // Proportional shares: recommend budget/5, each title budget/15, each description
        // budget/5, which add up to at most `budget`.
        let mut b = AnswerBounds {
            recommend_chars: (budget / 5).clamp(min.recommend_chars, max.recommend_chars),
            title_chars: (budget / 15).clamp(min.title_chars, max.title_chars),
            description_chars: (budget / 5).clamp(min.description_chars, max.description_chars),
        };
        // Raising a share to its minimum may overshoot a small budget: take it back from the
        // descriptions, then the recommendation (both start above their minimum there).
        while b.content_chars() > budget {
            if b.description_chars > min.description_chars {
                b.description_chars -= 1;
            } else if b.recommend_chars > min.recommend_chars {
                b.recommend_chars -= 1;
            } else {
                b.title_chars -= 1; // unreachable: MIN fits, checked above
            }
        }
        // Capped shares leave budget over: give it to what is not capped yet.
        loop {
            let left = budget - b.content_chars();
            let per_item = CHALLENGE_COUNT;
            if b.description_chars < max.description_chars && left >= per_item {
                b.description_chars += 1;
            } else if b.title_chars < max.title_chars && left >= per_item {
                b.title_chars += 1;
            } else if b.recommend_chars < max.recommend_chars && left >= 1 {
                b.recommend_chars += 1;
            } else {
                break;
            }
        }
        Some(b)
    }

    /// Content characters of a longest answer.
    fn content_chars(&self) -> usize {
        self.recommend_chars + CHALLENGE_COUNT * (self.title_chars + self.description_chars)
    }

    /// Tokens the longest answer the grammar allows can take: one token per byte of fixed text
    /// (keys, punctuation, quotes, maximal whitespace), `TOKENS_PER_CHAR` per content character,
    /// plus the end-of-generation token.
    pub fn worst_case_tokens(&self) -> usize {
        fixed_tokens() + TOKENS_PER_CHAR * self.content_chars()
    }

    fn max_chars(&self, field: Field) -> usize {
        match field {
            Field::Recommend => self.recommend_chars,
            Field::Title => self.title_chars,
            Field::Description => self.description_chars,
        }
    }
}

/// The answer's JSON schema (for engines that take schemas, and for documentation; the grammar
/// below is what constrains the embedded engine).
pub fn answer_schema(b: &AnswerBounds) -> Value {
    let string = |max: usize| json!({"type": "string", "minLength": 1, "maxLength": max});
    json!({
        "type": "object",
        "properties": {
            "recommend": string(b.recommend_chars),
            "challenges": {
                "type": "array",
                "minItems": CHALLENGE_COUNT,
                "maxItems": CHALLENGE_COUNT,
                "items": {
                    "type": "object",
                    "properties": {
                        "title": string(b.title_chars),
                        "description": string(b.description_chars),
                    },
                    "required": ["title", "description"],
                    "additionalProperties": false,
                },
            },
        },
        "required": ["recommend", "challenges"],
        "additionalProperties": false,
    })
}

/// A string field of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Recommend,
    Title,
    Description,
}

impl Field {
    /// The grammar's terminal for this field's quoted string.
    fn terminal(self) -> &'static str {
        match self {
            Field::Recommend => "RECOMMEND",
            Field::Title => "TITLE",
            Field::Description => "DESCRIPTION",
        }
    }
}

/// One element of the answer's skeleton. The grammar and the worst-case count are both derived
/// from the same skeleton, so they cannot disagree.
///
/// The layout is fixed (one space after `,` and `:`, no other whitespace), as a model writes JSON
/// on one line: between two values the grammar then admits exactly one text, which the engine
/// feeds in one step instead of a decode step per token (grammar fast-forward).
#[derive(Debug, Clone, Copy)]
enum Part {
    /// Fixed text.
    Lit(&'static str),
    /// A quoted string of 1..=max characters.
    Str(Field),
    /// One challenge object (`ITEM`).
    Item,
}

use Part::{Item, Lit, Str};

const ROOT: &[Part] = &[
    Lit("{\"recommend\": "),
    Str(Field::Recommend),
    Lit(", \"challenges\": ["),
    Item,
    Lit(", "),
    Item,
    Lit(", "),
    Item,
    Lit("]}"),
];

const ITEM: &[Part] = &[
    Lit("{\"title\": "),
    Str(Field::Title),
    Lit(", \"description\": "),
    Str(Field::Description),
    Lit("}"),
];

/// Tokens of everything but the content characters, end-of-generation included.
fn fixed_tokens() -> usize {
    fn fixed(parts: &[Part]) -> usize {
        parts
            .iter()
            .map(|p| match p {
                Lit(s) => s.len(),
                Str(_) => 2, // the quotes
                Item => fixed(ITEM),
            })
            .sum()
    }
    fixed(ROOT) + EOG_TOKENS
}

/// Characters allowed in a string: printable text of the Basic Multilingual Plane except `"` `\`
/// `{` `}` `[` `]`. Why so narrow:
/// - no backslash means no escape sequences, so a character is never more than 3 bytes (a `\u`
///   escape is 6, a 4-byte emoji would break the 3-tokens-per-character bound that keeps the
///   answer inside the token budget; an answer cut by the budget was the original's failure);
/// - no quotes, braces or brackets means a fragment streamed to the user can never contain JSON
///   syntax, and the final text always parses;
/// - no control characters (a raw newline inside a string is invalid JSON anyway).
const CONTENT_CHAR: &str = r"[ !#-Z^-z|~\u00A0-\uD7FF\uE000-\uFFFD]";
/// The first character of a string: the same without any whitespace (the space, and Unicode's
/// U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), so that no value is
/// blank once trimmed.
const FIRST_CHAR: &str = concat!(
    r"[!#-Z^-z|~\u00A1-\u167F\u1681-\u1FFF\u200B-\u2027\u202A-\u202E\u2030-\u205E",
    r"\u2060-\u2FFF\u3001-\uD7FF\uE000-\uFFFD]"
);

/// The grammar (llguidance's Lark, start rule `start`) that admits exactly the answers of
/// `answer_schema(b)` in the layout of the skeleton above: keys in order, strings of 1..=max
/// characters, the first from `FIRST_CHAR`, the others from `CONTENT_CHAR`.
pub fn answer_grammar(b: &AnswerBounds) -> String {
    fn render(parts: &[Part]) -> String {
        parts
            .iter()
            .map(|p| match p {
                Lit(s) => serde_json::to_string(s).expect("a string serializes"),
                Str(f) => f.terminal().to_owned(),
                Item => "item".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
    let mut g = String::new();
    g.push_str(&format!("start: {}\n", render(ROOT)));
    g.push_str(&format!("item: {}\n", render(ITEM)));
    for field in [Field::Recommend, Field::Title, Field::Description] {
        // One regular expression per string: the lexer takes it whole, and the closing quote
        // (never a content character) ends it unambiguously.
        g.push_str(&format!(
            "{}: /\"{FIRST_CHAR}{CONTENT_CHAR}{{0,{}}}\"/\n",
            field.terminal(),
            b.max_chars(field) - 1
        ));
    }
    g
}

#[cfg(test)]
mod tests;
