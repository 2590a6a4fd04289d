//! The recommendation flow of both Leafresh endpoints, from a valid request to a parsed answer:
//! prompt building, history fitting, answer sizing and its grammar, fragment extraction, answer
//! parsing and the session write. It reaches generation only through the [`Engine`] seam, so it
//! runs the same on any engine and is unit-tested with a scripted one.

use std::sync::Arc;

use super::answer::{parse_answer, Answer, AnswerError};
use super::categories::{default_category, Category};
use super::constants::{constants, GenerationDefaults};
use super::extract::FragmentExtractor;
use super::prompt::{
    answer_grammar, answer_schema, base_info_messages, base_info_request, free_text_messages,
    free_text_request, AnswerBounds,
};
use super::sessions::{SessionStore, Turn};
use super::topic::{ValidBaseInfo, ValidFreeText};
use crate::engine::{
    budget, fit, ChatMessage, CountedPrompt, Engine, EngineError, Generation, GenerationEvent,
    GenerationEvents, GenerationSummary, OutputConstraint, SamplingParams,
};

/// Why a recommendation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The prompt leaves too little room for a complete answer.
    #[error(
        "the prompt leaves room for {room} new tokens, but a complete answer needs at least \
         {needed}; shorten the message or raise --ctx-size"
    )]
    NoRoomForAnswer { room: usize, needed: usize },
    /// The model's text is not an answer (only without the grammar: with it, the answer is always
    /// complete JSON of the answer's shape, with no blank value).
    #[error(transparent)]
    Unparseable(#[from] AnswerError),
}

/// Makes recommendations on one engine and remembers conversations in one session store.
pub struct Recommender {
    engine: Arc<dyn Engine>,
    sessions: Arc<SessionStore>,
    /// Constrain answers with the JSON grammar (off with `--no-grammar`).
    grammar: bool,
}

impl Recommender {
    pub fn new(engine: Arc<dyn Engine>, sessions: Arc<SessionStore>, grammar: bool) -> Self {
        Self {
            engine,
            sessions,
            grammar,
        }
    }

    /// Starts a base-info recommendation. The session (if any) takes the request's category.
    pub async fn base_info(&self, valid: &ValidBaseInfo) -> Result<Recommendation, RecommendError> {
        let messages = base_info_messages(valid);
        // The Leafresh endpoints name no model: the engine's default one.
        let counted = self
            .engine
            .count_tokens(None, messages.clone(), None)
            .await?;
        let defaults = &constants().generation_defaults.base_info;
        let events = self
            .submit(messages, counted, defaults, valid.session_id.as_deref())
            .await?;
        if let Some(id) = &valid.session_id {
            self.sessions.set_category(id, valid.category);
        }
        // Remembered as the prompt spelled it, so a later turn replays it byte for byte.
        let turn = self.turn_writer(valid.session_id.clone(), base_info_request(valid));
        Ok(Recommendation::new(events, valid.category, turn))
    }

    /// Starts a free-text recommendation in the session's category, with as much of its history
    /// as fits.
    pub async fn free_text(&self, valid: &ValidFreeText) -> Result<Recommendation, RecommendError> {
        let session = valid.session_id.as_deref();
        let category = session.map_or_else(default_category, |id| self.sessions.category(id));
        let history = session
            .map(|id| self.sessions.history(id))
            .unwrap_or_default();
        let defaults = &constants().generation_defaults.free_text;
        let (messages, counted) = self
            .fit_history(&history, &valid.message, category, defaults)
            .await?;
        let events = self.submit(messages, counted, defaults, session).await?;
        let turn = self.turn_writer(
            valid.session_id.clone(),
            free_text_request(&valid.message, category),
        );
        Ok(Recommendation::new(events, category, turn))
    }

    /// The messages with the newest turns of the conversation that fit the context with room for
    /// a full answer (the oldest go first), and their prompt, counted. (The original never
    /// trimmed, until every prompt overflowed.)
    async fn fit_history(
        &self,
        history: &[Turn],
        message: &str,
        category: &Category,
        defaults: &GenerationDefaults,
    ) -> Result<(Vec<ChatMessage>, CountedPrompt), RecommendError> {
        let room = self.engine.context_window(None);
        let answer = defaults.max_tokens as usize;
        let (dropped, fitted) = fit::fewest_to_drop(history.len(), |skip| {
            let messages = free_text_messages(&history[skip..], message, category);
            async move {
                let counted = self
                    .engine
                    .count_tokens(None, messages.clone(), None)
                    .await?;
                Ok((counted.tokens + answer <= room, (messages, counted)))
            }
        })
        .await?;
        if dropped > 0 {
            tracing::debug!(
                dropped_turns = dropped,
                "history trimmed to fit the context"
            );
        }
        Ok(fitted)
    }

    /// Sizes the answer and submits it: the budget is what the context leaves; with the grammar
    /// on, the answer's string bounds are chosen so that even its worst case fits that budget,
    /// so `close` always parses.
    async fn submit(
        &self,
        messages: Vec<ChatMessage>,
        counted: CountedPrompt,
        defaults: &GenerationDefaults,
        session: Option<&str>,
    ) -> Result<GenerationEvents, RecommendError> {
        let max_new_tokens = budget::max_new_tokens(
            counted.tokens,
            defaults.max_tokens as usize,
            self.engine.context_window(None),
        )?;
        let constraint = if self.grammar {
            let bounds =
                AnswerBounds::fitting(max_new_tokens).ok_or(RecommendError::NoRoomForAnswer {
                    room: max_new_tokens,
                    needed: AnswerBounds::minimum().worst_case_tokens(),
                })?;
            Some(OutputConstraint::Grammar {
                lark: answer_grammar(&bounds),
                json_schema: answer_schema(&bounds).to_string(),
            })
        } else {
            None
        };
        let generation = Generation {
            messages,
            sampling: SamplingParams {
                temperature: defaults.temperature,
                top_p: defaults.top_p,
                top_k: defaults.top_k,
                repeat_penalty: defaults.repeat_penalty,
                min_p: defaults.min_p,
                ..SamplingParams::default()
            },
            constraint,
            max_tokens: Some(max_new_tokens),
            session: session.map(str::to_owned),
            counted: Some(counted),
            ..Generation::default()
        };
        Ok(self.engine.submit(generation).await?)
    }

    /// After a successful answer, the session (if any) remembers both sides of the turn.
    fn turn_writer(&self, session_id: Option<String>, user: String) -> Option<TurnWriter> {
        session_id.map(|session_id| TurnWriter {
            sessions: Arc::clone(&self.sessions),
            session_id,
            user,
        })
    }
}

/// The session write of a turn, done once its answer parsed.
struct TurnWriter {
    sessions: Arc<SessionStore>,
    session_id: String,
    user: String,
}

/// What a running recommendation has next.
#[derive(Debug)]
pub enum Progress {
    /// Readable text for a `challenge` event.
    Fragment(String),
    /// The parsed answer (the session is updated); nothing follows.
    Answered {
        answer: Answer,
        summary: GenerationSummary,
    },
    /// It ended without an answer; nothing follows. The summary is there when the engine
    /// finished but its text did not parse.
    Failed {
        error: RecommendError,
        summary: Option<GenerationSummary>,
    },
}

/// A recommendation being generated. Dropping it cancels the generation.
pub struct Recommendation {
    events: GenerationEvents,
    extractor: FragmentExtractor,
    text: String,
    category: &'static Category,
    turn: Option<TurnWriter>,
    /// The end, held back while the extractor's last fragment is delivered.
    ending: Option<Progress>,
}

impl Recommendation {
    fn new(
        events: GenerationEvents,
        category: &'static Category,
        turn: Option<TurnWriter>,
    ) -> Self {
        Self {
            events,
            extractor: FragmentExtractor::new(),
            text: String::new(),
            category,
            turn,
            ending: None,
        }
    }

    /// Waits for the next fragment or the end. Cancel-safe: dropping the future loses nothing.
    /// After `Answered` or `Failed` it must not be called again.
    pub async fn next(&mut self) -> Progress {
        if let Some(ending) = self.ending.take() {
            return ending;
        }
        loop {
            let Some(event) = self.events.recv().await else {
                // The engine dropped the request without a final event: it stopped.
                return Progress::Failed {
                    error: EngineError::Stopped.into(),
                    summary: None,
                };
            };
            match event {
                GenerationEvent::Text(piece) => {
                    self.text.push_str(&piece);
                    if let Some(fragment) = self.extractor.push(&piece) {
                        return Progress::Fragment(fragment);
                    }
                }
                // No tools are offered to the Leafresh answer, nor log probabilities asked for;
                // a model's thinking is not part of the answer.
                GenerationEvent::Reasoning(_)
                | GenerationEvent::ToolCall { .. }
                | GenerationEvent::ToolArguments { .. }
                | GenerationEvent::Logprobs(_) => {}
                GenerationEvent::Done(summary) => {
                    let ending = self.conclude(summary);
                    return match self.extractor.finish() {
                        Some(fragment) => {
                            self.ending = Some(ending);
                            Progress::Fragment(fragment)
                        }
                        None => ending,
                    };
                }
                GenerationEvent::Failed(e) => {
                    return Progress::Failed {
                        error: e.into(),
                        summary: None,
                    }
                }
            }
        }
    }

    /// Parses the whole text; a parsed answer is written to the session.
    fn conclude(&mut self, summary: GenerationSummary) -> Progress {
        match parse_answer(&self.text, self.category) {
            Ok(answer) => {
                if let Some(turn) = self.turn.take() {
                    turn.sessions.push_turn(
                        &turn.session_id,
                        Turn {
                            user: turn.user,
                            assistant: std::mem::take(&mut self.text),
                        },
                    );
                }
                Progress::Answered { answer, summary }
            }
            Err(e) => Progress::Failed {
                error: e.into(),
                summary: Some(summary),
            },
        }
    }
}

#[cfg(test)]
mod tests;
