//! What every protocol does with the engine's events, whatever its wire format: one answer
//! gathered whole, or the answers of several choices (`n`) read as they come, each event tagged
//! with its choice. The protocols frame the result (OpenAI chat and completions, Responses,
//! Anthropic Messages).

use futures_util::stream::{self, BoxStream, StreamExt};

use crate::engine::{
    EngineError, GenerationEvent, GenerationEvents, GenerationSummary, TokenLogprob, ToolCall,
};

/// One answer, gathered: its text, its tool calls, the log probabilities of its text's tokens
/// (when asked for), and how it ended.
#[derive(Debug, Default, Clone)]
pub struct Answer {
    pub text: String,
    /// The model's thinking before its answer.
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
    pub logprobs: Vec<TokenLogprob>,
}

impl Answer {
    /// Takes one event: `Some` with the summary (or the error) once the answer is over.
    pub fn take(
        &mut self,
        event: GenerationEvent,
    ) -> Option<Result<GenerationSummary, EngineError>> {
        match event {
            GenerationEvent::Text(piece) => self.text.push_str(&piece),
            GenerationEvent::Reasoning(piece) => self.reasoning.push_str(&piece),
            GenerationEvent::Logprobs(logprobs) => self.logprobs.extend(logprobs),
            GenerationEvent::ToolCall { index, id, name } => {
                if index == self.calls.len() {
                    self.calls.push(ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    });
                }
            }
            GenerationEvent::ToolArguments { index, fragment } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.arguments.push_str(&fragment);
                }
            }
            GenerationEvent::Done(summary) => return Some(Ok(summary)),
            GenerationEvent::Failed(e) => return Some(Err(e)),
        }
        None
    }
}

/// Waits for every choice's whole answer; the first failure fails them all (the others are
/// cancelled when their receivers drop).
pub async fn gather(
    choices: Vec<GenerationEvents>,
) -> Result<Vec<(Answer, GenerationSummary)>, EngineError> {
    let mut answers = Vec::with_capacity(choices.len());
    for mut events in choices {
        let mut answer = Answer::default();
        let summary = loop {
            match events.recv().await {
                Some(event) => {
                    if let Some(outcome) = answer.take(event) {
                        break outcome?;
                    }
                }
                None => return Err(EngineError::Stopped),
            }
        };
        answers.push((answer, summary));
    }
    Ok(answers)
}

/// The events of all choices as they come, each with its choice's index. A choice whose channel
/// closes without a final event yields [`EngineError::Stopped`] for it. Dropping the stream
/// cancels every choice.
pub fn merged(choices: Vec<GenerationEvents>) -> BoxStream<'static, (usize, GenerationEvent)> {
    stream::select_all(choices.into_iter().enumerate().map(|(index, events)| {
        stream::unfold(Some(events), move |events| async move {
            let mut events = events?;
            match events.recv().await {
                Some(event) => {
                    let last =
                        matches!(event, GenerationEvent::Done(_) | GenerationEvent::Failed(_));
                    Some(((index, event), (!last).then_some(events)))
                }
                None => Some(((index, GenerationEvent::Failed(EngineError::Stopped)), None)),
            }
        })
        .boxed()
    }))
    .boxed()
}

/// The usage of several choices: the prompt once, the completions of all.
pub fn total_usage(summaries: &[GenerationSummary]) -> Option<GenerationSummary> {
    let mut total = summaries.first()?.clone();
    total.completion_tokens = summaries.iter().map(|s| s.completion_tokens).sum();
    total.forced_tokens = summaries.iter().map(|s| s.forced_tokens).sum();
    total.drafted_tokens = summaries.iter().map(|s| s.drafted_tokens).sum();
    total.accepted_tokens = summaries.iter().map(|s| s.accepted_tokens).sum();
    total.total_time = summaries.iter().map(|s| s.total_time).max()?;
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FinishReason;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn summary(completion_tokens: usize) -> GenerationSummary {
        GenerationSummary {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 10,
            cached_tokens: 0,
            completion_tokens,
            forced_tokens: 0,
            drafted_tokens: 0,
            accepted_tokens: 0,
            queue_wait: Duration::ZERO,
            time_to_first_token: Duration::ZERO,
            total_time: Duration::from_millis(completion_tokens as u64),
            upstream_latency: None,
            stop_sequence: None,
        }
    }

    #[tokio::test]
    async fn merged_choices_keep_their_index_and_each_ends() {
        let (a, a_rx) = mpsc::unbounded_channel();
        let (b, b_rx) = mpsc::unbounded_channel();
        a.send(GenerationEvent::Text("가".into())).unwrap();
        b.send(GenerationEvent::Text("나".into())).unwrap();
        a.send(GenerationEvent::Done(summary(1))).unwrap();
        drop(b); // closes without a final event
        let events: Vec<(usize, GenerationEvent)> = merged(vec![a_rx, b_rx]).collect().await;
        let texts: Vec<(usize, String)> = events
            .iter()
            .filter_map(|(i, e)| match e {
                GenerationEvent::Text(t) => Some((*i, t.clone())),
                _ => None,
            })
            .collect();
        assert!(texts.contains(&(0, "가".into())) && texts.contains(&(1, "나".into())));
        assert!(events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, GenerationEvent::Done(_))));
        assert!(events
            .iter()
            .any(|(i, e)| *i == 1 && matches!(e, GenerationEvent::Failed(EngineError::Stopped))));
        drop(a);
    }

    #[test]
    fn usage_counts_the_prompt_once_and_every_completion() {
        let total = total_usage(&[summary(3), summary(5)]).unwrap();
        assert_eq!((total.prompt_tokens, total.completion_tokens), (10, 8));
    }
}
