//! The Leafresh chatbot domain, pure Rust (no llama.cpp, no actix): request decoding and
//! validation, prompts and the answer's grammar, the streaming cleansing of model text, the
//! final answer, and the conversation store.
//!
//! A recommendation request flows through it as:
//! `query::parse_query` -> `topic::validate_*` -> `recommender::Recommender`, which builds the
//! messages (`prompt`), fits the history, sizes the answer and its grammar, submits it to the
//! engine seam, turns each piece into readable fragments (`extract`), parses the full text
//! (`answer`) and writes the turn to the session (`sessions`).
//!
//! What only unconstrained (`--no-grammar`) output needs lives in `lenient`, behind `extract` and
//! `answer`.

pub mod answer;
pub mod categories;
pub mod constants;
pub mod extract;
mod lenient;
pub mod prompt;
pub mod query;
pub mod recommender;
pub mod sessions;
pub mod topic;

pub use answer::{parse_answer, Answer, AnswerError, Challenge};
pub use categories::{default_category, Category};
pub use constants::{constants, Constants, GenerationDefaults, Messages};
pub use extract::FragmentExtractor;
pub use prompt::{
    answer_grammar, answer_schema, base_info_messages, free_text_messages, AnswerBounds,
};
pub use query::{parse_query, QueryError, QueryParams};
pub use recommender::{Progress, RecommendError, Recommendation, Recommender};
pub use sessions::{SessionStore, Turn};
pub use topic::{
    validate_base_info, validate_free_text, validate_session_id, Rejection, ValidBaseInfo,
    ValidFreeText,
};
