//! Unit tests of `recommender` (a file of their own to keep `recommender.rs` short).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::*;
use crate::engine::{EngineStats, FinishReason, LlamaError};
use crate::leafresh::categories::by_label as category_by_label;

/// An engine double: one token per character, a fixed context window, and for each submit
/// the next scripted list of events. It records what it was asked.
struct ScriptedEngine {
    context: usize,
    scripts: Mutex<VecDeque<Vec<GenerationEvent>>>,
    submitted: Mutex<Vec<Generation>>,
    counts: Mutex<usize>,
}

impl ScriptedEngine {
    fn new(context: usize, scripts: Vec<Vec<GenerationEvent>>) -> Arc<Self> {
        Arc::new(Self {
            context,
            scripts: Mutex::new(scripts.into()),
            submitted: Mutex::new(Vec::new()),
            counts: Mutex::new(0),
        })
    }

    fn submitted(&self) -> Vec<Generation> {
        self.submitted.lock().unwrap().clone()
    }
}

fn tokens_of(messages: &[ChatMessage]) -> usize {
    messages.iter().map(|m| m.content.chars().count()).sum()
}

impl Engine for ScriptedEngine {
    fn submit(
        &self,
        generation: Generation,
    ) -> BoxFuture<'_, Result<GenerationEvents, EngineError>> {
        self.submitted.lock().unwrap().push(generation);
        let events = self.scripts.lock().unwrap().pop_front().unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        for event in events {
            tx.send(event).unwrap();
        }
        Box::pin(async move { Ok(rx) })
    }

    fn count_tokens(
        &self,
        _model: Option<&str>,
        messages: Vec<ChatMessage>,
        _tools: Option<crate::engine::Tools>,
    ) -> BoxFuture<'_, Result<crate::engine::CountedPrompt, EngineError>> {
        *self.counts.lock().unwrap() += 1;
        Box::pin(async move { Ok(crate::engine::CountedPrompt::count(tokens_of(&messages))) })
    }

    fn context_window(&self, _model: Option<&str>) -> usize {
        self.context
    }

    fn model_ids(&self) -> Vec<String> {
        vec!["scripted".into()]
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            active: 0,
            queued: 0,
            alive: true,
            engine: "scripted",
            errors: 0,
            steps: Default::default(),
        }
    }

    fn abort_all(&self, _error: EngineError) {}
}

const ANSWER: &str = r#"{"recommend": "오늘 실천해 보세요.", "challenges": [{"title": "텀블러 쓰기", "description": "일회용 컵 대신 텀블러를 씁니다."}, {"title": "계단 이용", "description": "엘리베이터 대신 계단을 씁니다."}, {"title": "장바구니", "description": "비닐봉지 대신 장바구니를 씁니다."}]}"#;

fn summary() -> GenerationSummary {
    GenerationSummary {
        finish_reason: FinishReason::Stop,
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: 40,
        forced_tokens: 0,
        drafted_tokens: 0,
        accepted_tokens: 0,
        queue_wait: Duration::ZERO,
        time_to_first_token: Duration::from_millis(5),
        total_time: Duration::from_millis(50),
        upstream_latency: None,
        stop_sequence: None,
    }
}

/// The answer in pieces of a few characters, as an engine streams it, then `Done`.
fn streamed(text: &str) -> Vec<GenerationEvent> {
    let chars: Vec<char> = text.chars().collect();
    let mut events: Vec<_> = chars
        .chunks(3)
        .map(|c| GenerationEvent::Text(c.iter().collect()))
        .collect();
    events.push(GenerationEvent::Done(summary()));
    events
}

fn sessions() -> Arc<SessionStore> {
    Arc::new(SessionStore::new(10, Duration::from_secs(600)))
}

fn base_info(session: Option<&str>) -> ValidBaseInfo {
    ValidBaseInfo {
        session_id: session.map(str::to_owned),
        location: "도시".into(),
        work_type: "사무직".into(),
        category: category_by_label("비건").unwrap(),
    }
}

fn free_text(session: &str, message: &str) -> ValidFreeText {
    ValidFreeText {
        session_id: Some(session.into()),
        message: message.into(),
    }
}

/// Drives a recommendation to its end: its fragments and how it ended.
async fn run(mut recommendation: Recommendation) -> (Vec<String>, Progress) {
    let mut fragments = Vec::new();
    loop {
        match recommendation.next().await {
            Progress::Fragment(f) => fragments.push(f),
            end => return (fragments, end),
        }
    }
}

#[tokio::test]
async fn a_base_info_answer_streams_readable_fragments_then_parses_and_is_remembered() {
    let engine = ScriptedEngine::new(4096, vec![streamed(ANSWER)]);
    let store = sessions();
    let recommender = Recommender::new(engine.clone(), store.clone(), true);
    let valid = base_info(Some("s1"));
    let (fragments, end) = run(recommender.base_info(&valid).await.unwrap()).await;

    let shown = fragments.concat();
    assert!(
        shown.contains("텀블러 쓰기") && !shown.contains('{'),
        "{shown}"
    );
    let Progress::Answered { answer, .. } = end else {
        panic!("{end:?}");
    };
    assert_eq!(answer.challenges.len(), 3);
    assert_eq!(store.category("s1").label, "비건");
    assert_eq!(
        store.history("s1"),
        vec![Turn {
            user: base_info_request(&valid),
            assistant: ANSWER.into()
        }]
    );
    let submitted = engine.submitted();
    assert_eq!(submitted[0].messages, base_info_messages(&valid));
    // The session id goes with the request, for engines that route by conversation.
    assert_eq!(submitted[0].session.as_deref(), Some("s1"));
}

#[tokio::test]
async fn the_answer_grammar_is_sized_to_the_room_the_prompt_leaves() {
    let valid = base_info(None);
    let prompt = tokens_of(&base_info_messages(&valid));
    for room in [400, 2000] {
        let engine = ScriptedEngine::new(prompt + room, vec![streamed(ANSWER)]);
        let recommender = Recommender::new(engine.clone(), sessions(), true);
        run(recommender.base_info(&valid).await.unwrap()).await;
        let generation = &engine.submitted()[0];
        let defaults = constants().generation_defaults.base_info;
        let budget = room.min(defaults.max_tokens as usize);
        assert_eq!(generation.max_tokens, Some(budget));
        let bounds = AnswerBounds::fitting(budget).unwrap();
        assert!(bounds.worst_case_tokens() <= budget);
        assert_eq!(
            generation.constraint,
            Some(OutputConstraint::Grammar {
                lark: answer_grammar(&bounds),
                json_schema: crate::leafresh::answer_schema(&bounds).to_string(),
            })
        );
        assert_eq!(generation.sampling.temperature, defaults.temperature);
    }
}

#[tokio::test]
async fn a_prompt_that_leaves_no_room_for_a_whole_answer_is_refused_before_submitting() {
    let valid = base_info(None);
    let prompt = tokens_of(&base_info_messages(&valid));
    let engine = ScriptedEngine::new(prompt + 10, vec![]);
    let recommender = Recommender::new(engine.clone(), sessions(), true);
    let error = recommender.base_info(&valid).await.err().unwrap();
    assert!(
        matches!(error, RecommendError::NoRoomForAnswer { room: 10, .. }),
        "{error}"
    );
    assert!(engine.submitted().is_empty());
}

#[tokio::test]
async fn without_the_grammar_the_answer_is_unconstrained() {
    let engine = ScriptedEngine::new(4096, vec![streamed(ANSWER)]);
    let recommender = Recommender::new(engine.clone(), sessions(), false);
    run(recommender.base_info(&base_info(None)).await.unwrap()).await;
    assert_eq!(engine.submitted()[0].constraint, None);
}

/// A session with `n` turns, each `size` characters on both sides.
fn conversation(store: &SessionStore, id: &str, n: usize) -> Vec<Turn> {
    for i in 0..n {
        store.push_turn(
            id,
            Turn {
                user: format!("{i:02}{}", "가".repeat(48)),
                assistant: format!("{i:02}{}", "나".repeat(48)),
            },
        );
    }
    store.history(id)
}

#[tokio::test]
async fn free_text_keeps_the_newest_turns_that_fit_and_counts_only_a_few_times() {
    let message = "플라스틱을 줄이고 싶어요";
    let category = default_category();
    let answer = constants().generation_defaults.free_text.max_tokens as usize;
    let store = sessions();
    let history = conversation(&store, "s", 20);
    let tokens = |skip: usize| tokens_of(&free_text_messages(&history[skip..], message, category));
    // Every window from "all fit" to "none fit": the turns kept are the newest that fit,
    // as dropping one turn at a time from the oldest would find.
    for context in (tokens(20) + answer..=tokens(0) + answer).step_by(37) {
        let expected = (0..=20)
            .find(|&s| tokens(s) + answer <= context)
            .unwrap_or(20);
        let engine = ScriptedEngine::new(context, vec![streamed(ANSWER)]);
        let recommender = Recommender::new(engine.clone(), store.clone(), true);
        let recommendation = recommender
            .free_text(&free_text("s", message))
            .await
            .unwrap();
        drop(recommendation);
        assert_eq!(
            engine.submitted()[0].messages,
            free_text_messages(&history[expected..], message, category),
            "context {context}"
        );
        // The whole conversation, a bisection over 20 turns, and at most one more.
        assert!(*engine.counts.lock().unwrap() <= 7, "context {context}");
        // The count of the messages sent goes with them: the engine does not render them again.
        let counted = engine.submitted()[0].counted.clone().expect("counted");
        assert_eq!(counted.tokens, tokens(expected), "context {context}");
    }
}

#[tokio::test]
async fn a_follow_up_replays_the_previous_turn_and_is_remembered_after_it() {
    let engine = ScriptedEngine::new(4096, vec![streamed(ANSWER), streamed(ANSWER)]);
    let store = sessions();
    let recommender = Recommender::new(engine.clone(), store.clone(), true);
    run(recommender.base_info(&base_info(Some("s"))).await.unwrap()).await;
    let follow_up = free_text("s", "더 쉬운 것도 알려 주세요");
    run(recommender.free_text(&follow_up).await.unwrap()).await;

    let vegan = category_by_label("비건").unwrap();
    let history = store.history("s");
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1].user,
        free_text_request(&follow_up.message, vegan)
    );
    assert_eq!(
        engine.submitted()[1].messages,
        free_text_messages(&history[..1], &follow_up.message, vegan)
    );
}

#[tokio::test]
async fn an_unparseable_answer_fails_with_its_summary_and_is_not_remembered() {
    let engine = ScriptedEngine::new(4096, vec![streamed("추천할 수 없습니다")]);
    let store = sessions();
    let recommender = Recommender::new(engine, store.clone(), false);
    let (_, end) = run(recommender.base_info(&base_info(Some("s"))).await.unwrap()).await;
    assert!(
        matches!(
            end,
            Progress::Failed {
                error: RecommendError::Unparseable(_),
                summary: Some(_)
            }
        ),
        "{end:?}"
    );
    assert!(store.history("s").is_empty());
}

#[tokio::test]
async fn an_engine_failure_mid_stream_ends_it_and_is_not_remembered() {
    let mut events = streamed(&ANSWER[..18]);
    events.pop();
    events.push(GenerationEvent::Failed(EngineError::Llama(
        LlamaError::Decode("-1".into()),
    )));
    let engine = ScriptedEngine::new(4096, vec![events]);
    let store = sessions();
    let recommender = Recommender::new(engine, store.clone(), true);
    let (_, end) = run(recommender.base_info(&base_info(Some("s"))).await.unwrap()).await;
    assert!(
        matches!(
            end,
            Progress::Failed {
                error: RecommendError::Engine(EngineError::Llama(LlamaError::Decode(_))),
                summary: None
            }
        ),
        "{end:?}"
    );
    assert!(store.history("s").is_empty());
}

#[tokio::test]
async fn an_engine_that_drops_the_request_without_a_final_event_has_stopped() {
    let mut events = streamed(ANSWER);
    events.pop();
    let engine = ScriptedEngine::new(4096, vec![events]);
    let recommender = Recommender::new(engine, sessions(), true);
    let (_, end) = run(recommender.base_info(&base_info(None)).await.unwrap()).await;
    assert!(
        matches!(
            end,
            Progress::Failed {
                error: RecommendError::Engine(EngineError::Stopped),
                ..
            }
        ),
        "{end:?}"
    );
}
