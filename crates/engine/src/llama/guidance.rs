//! Output constraints as token masks, through llguidance: JSON schemas and this service's Lark
//! grammars are compiled per request into a [`Matcher`], which says which tokens may come next and
//! which tokens are forced (grammar fast-forward: where the grammar admits exactly one
//! continuation, those tokens are fed in one batch instead of one decode step each).
//!
//! Forced tokens must be the ones the model itself would have produced, or the model sees text
//! tokenized in a way it never saw in training. llguidance gets that right at the boundary between
//! sampled and forced text (its `docs/fast_forward.md`) provided its tokenizer is canonical: here it
//! is llama.cpp's own tokenizer ([`ModelTokenizer`]), not a greedy walk of the vocabulary.

use std::sync::Arc;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::tokenizer::Tokenizer;
use crate::tool_calls::calls_schema;
use crate::Tools;

/// A grammar for the answer, in llguidance's terms.
#[derive(Debug, Clone)]
pub enum GrammarSource<'a> {
    /// A JSON schema (text), from a client.
    JsonSchema(&'a str),
    /// A Lark grammar (llguidance's dialect, start rule `start`), written by this service.
    Lark(&'a str),
}

/// Why a grammar cannot be enforced (llguidance's message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GrammarRejected(pub String);

/// How JSON is laid out where a schema leaves the choice to us: one space after `,` and `:`, no
/// other whitespace. A fixed layout is what makes the keys and punctuation between values a
/// single continuation the grammar can force; it is also how models write JSON on one line.
const JSON_LAYOUT: &str = r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": true}"#;

/// The compiler of a model's constraints. Building it walks the whole vocabulary (tens of
/// milliseconds for a 32k vocabulary): once per model.
pub struct Guidance {
    factory: ParserFactory,
}

impl Guidance {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self, GrammarRejected> {
        let env: TokEnv = Arc::new(ModelTokenizer::new(tokenizer));
        let caps = InferenceCapabilities {
            ff_tokens: true,
            ..InferenceCapabilities::default()
        };
        let slices = llguidance::earley::SlicedBiasComputer::general_slices();
        let mut factory =
            ParserFactory::new(&env, caps, &slices).map_err(|e| GrammarRejected(e.to_string()))?;
        // llguidance logs to stderr by default; its warnings come back through the matcher.
        factory.set_stderr_log_level(0);
        Ok(Self { factory })
    }

    /// A fresh matcher for one answer.
    pub fn matcher(&self, source: GrammarSource<'_>) -> Result<Matcher, GrammarRejected> {
        let grammar = match source {
            GrammarSource::JsonSchema(text) => {
                let schema: Value = serde_json::from_str(text)
                    .map_err(|e| GrammarRejected(format!("the schema is not JSON: {e}")))?;
                TopLevelGrammar::from_json_schema(with_layout(schema))
            }
            GrammarSource::Lark(lark) => TopLevelGrammar::from_lark(lark.to_owned()),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarRejected(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        match matcher.get_error() {
            Some(e) => Err(GrammarRejected(e)),
            None => Ok(matcher),
        }
    }
}

/// `schema` as compiled here: [`JSON_LAYOUT`] unless it sets its own, integers bounded, objects
/// closed.
fn with_layout(mut schema: Value) -> Value {
    bound_integers(&mut schema);
    close_objects(&mut schema);
    if let Value::Object(fields) = &mut schema {
        fields
            .entry("x-guidance")
            .or_insert_with(|| serde_json::from_str(JSON_LAYOUT).expect("valid JSON"));
    }
    schema
}

/// `schema` as text for a Lark grammar's `%json` rule, compiled as a JSON schema would be.
pub fn schema_text(schema: Value) -> String {
    with_layout(schema).to_string()
}

/// The grammar of the model's answer after `[TOOL_CALLS]` (llguidance Lark): a space, then a
/// list of calls of the offered functions, each with arguments valid for its schema; one call
/// unless parallel calls are allowed; only the named function when one is.
pub fn calls_grammar(tools: &Tools) -> String {
    format!(
        "start: \" \" calls\ncalls: %json {}\n",
        schema_text(calls_schema(tools))
    )
}

/// The largest integer every JSON reader holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Gives every `"type": "integer"` without bounds the range JSON readers hold exactly. JSON
/// Schema sets no limit, and a model that keeps writing digits would otherwise fill its whole
/// budget with one number (llama.cpp's own converter stops integers at 16 digits for the same
/// reason).
fn bound_integers(schema: &mut Value) {
    each_schema(schema, &mut |fields| {
        let unbounded = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
            .iter()
            .all(|k| !fields.contains_key(*k));
        if fields.get("type") == Some(&Value::from("integer")) && unbounded {
            fields.insert("minimum".into(), Value::from(-MAX_SAFE_INTEGER));
            fields.insert("maximum".into(), Value::from(MAX_SAFE_INTEGER));
        }
    });
}

/// Gives every object schema that lists `properties` and says nothing of others
/// `"additionalProperties": false`, as llama.cpp's converter (and OpenAI's strict mode) read such
/// schemas. JSON Schema's default would admit any other key, and a model may then invent keys no
/// caller expects.
fn close_objects(schema: &mut Value) {
    each_schema(schema, &mut |fields| {
        if fields.contains_key("properties") && !fields.contains_key("additionalProperties") {
            fields.insert("additionalProperties".into(), Value::Bool(false));
        }
    });
}

/// Calls `f` on `schema` and on every schema inside it, following the keywords that hold
/// schemas (never into `properties` names, `enum` or `const` values).
fn each_schema(schema: &mut Value, f: &mut impl FnMut(&mut serde_json::Map<String, Value>)) {
    let Value::Object(fields) = schema else {
        return;
    };
    f(fields);
    for (key, value) in fields.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Value::Object(named) = value {
                    named.values_mut().for_each(|v| each_schema(v, f));
                }
            }
            "items" | "prefixItems" | "anyOf" | "oneOf" | "allOf" => match value {
                Value::Array(list) => list.iter_mut().for_each(|v| each_schema(v, f)),
                other => each_schema(other, f),
            },
            "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames" => each_schema(value, f),
            _ => {}
        }
    }
}

/// llama.cpp's tokenizer as llguidance sees it: the vocabulary's byte strings (a trie) and a
/// canonical `tokenize_bytes`.
struct ModelTokenizer {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
    /// What [`SENTINEL`] tokenizes to on its own.
    sentinel: Vec<LlamaToken>,
}

/// Text put before a piece to tokenize it as the middle of an answer: SentencePiece tokenizers
/// (Mistral's) add a space before the first word of a text, which the middle of an answer does not
/// have. A newline is a byte-fallback token of its own there, so it never merges with what
/// follows; where it would, the check in [`ModelTokenizer::tokenize_bytes`] catches it.
const SENTINEL: &[u8] = b"\n";

impl ModelTokenizer {
    fn new(tokenizer: Arc<Tokenizer>) -> Self {
        let trie = LlamaSampler::llguidance_tok_env(tokenizer.llama())
            .tok_trie()
            .clone();
        let sentinel = tokenizer.tokenize_text(SENTINEL);
        Self {
            tokenizer,
            trie,
            sentinel,
        }
    }

    fn ids(tokens: &[LlamaToken]) -> Vec<TokenId> {
        tokens.iter().map(|t| t.0 as TokenId).collect()
    }

    fn spells(&self, tokens: &[TokenId], bytes: &[u8]) -> bool {
        self.trie.decode_raw(tokens) == bytes
    }
}

impl TokenizerEnv for ModelTokenizer {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// The tokens llama.cpp gives `s` in the middle of a text. Where neither way of asking spells
    /// `s` exactly (bytes that are not UTF-8), the greedy walk of the vocabulary; llguidance chops
    /// such a tail before forcing anything.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        if s.is_empty() {
            return Vec::new();
        }
        let direct = Self::ids(&self.tokenizer.tokenize_text(s));
        if self.spells(&direct, s) {
            return direct;
        }
        let mut marked = SENTINEL.to_vec();
        marked.extend_from_slice(s);
        let tokens = self.tokenizer.tokenize_text(&marked);
        if let Some(rest) = tokens.strip_prefix(self.sentinel.as_slice()) {
            let rest = Self::ids(rest);
            if self.spells(&rest, s) {
                return rest;
            }
        }
        self.trie.greedy_tokenize(s)
    }
}

/// The greedy sampler's choice made legal: `token` if the matcher allows it. Used to ask the
/// grammar about one token instead of masking the whole vocabulary.
pub fn allows(matcher: &mut Matcher, token: LlamaToken) -> bool {
    matches!(matcher.validate_tokens(&[token.0 as TokenId]), Ok(1))
}

/// Whether llguidance, fed `text` byte by byte, accepts it as a whole output of the Lark
/// `grammar`: a check of the grammars this service writes, without a model (tests use it).
pub fn lark_accepts(grammar: &str, text: &str) -> bool {
    use llguidance::toktrie::ApproximateTokEnv;
    let env = ApproximateTokEnv::single_byte_env();
    let Ok(mut factory) = ParserFactory::new_simple(&env) else {
        return false;
    };
    factory.set_stderr_log_level(0);
    let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar.to_owned()));
    let mut matcher = Matcher::new(parser);
    if matcher.is_error() {
        return false;
    }
    // The single-byte vocabulary: token i is byte i.
    let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
    matches!(matcher.try_consume_tokens(&bytes), Ok(n) if n == bytes.len())
        && matcher.is_accepting().unwrap_or(false)
}

#[cfg(test)]
mod tests;
