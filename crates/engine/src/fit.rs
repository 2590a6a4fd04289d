//! Fitting a conversation into the context window by dropping its oldest turns, on any engine.
//! Token counts fall as turns are dropped, so the fewest turns to drop are found by bisection:
//! a handful of counts, not one per turn.

use std::future::Future;

use super::{ChatMessage, CountedPrompt, Engine, EngineError, Role, Tools};

/// The smallest `k` in `0..=n` whose `attempt(k)` fits, with what that attempt made; `n`'s when
/// none fits. `attempt` must fit for every `k` above one that fits (monotone), as dropping more
/// turns never makes a prompt longer.
pub async fn fewest_to_drop<T, F, Fut>(n: usize, mut attempt: F) -> Result<(usize, T), EngineError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(bool, T), EngineError>>,
{
    let (fits, whole) = attempt(0).await?;
    if fits || n == 0 {
        return Ok((0, whole));
    }
    // Invariant: dropping `too_few` does not fit; dropping `enough` fits, or is all there is.
    let (mut too_few, mut enough) = (0, n);
    let mut best = None;
    while enough - too_few > 1 {
        let middle = too_few + (enough - too_few) / 2;
        let (fits, made) = attempt(middle).await?;
        if fits {
            enough = middle;
            best = Some(made);
        } else {
            too_few = middle;
        }
    }
    let made = match best {
        Some(made) => made,
        None => attempt(enough).await?.1,
    };
    Ok((enough, made))
}

/// A conversation fitted to the context window.
#[derive(Debug)]
pub struct Fitted {
    pub messages: Vec<ChatMessage>,
    /// Messages left out, oldest first.
    pub dropped: usize,
    /// The prompt of `messages` (with the tools it was fitted with), counted.
    pub counted: CountedPrompt,
}

/// The conversation without its oldest turns, so that its prompt leaves `reserve` tokens of
/// `model`'s context window for the answer; how many messages were dropped, and the kept prompt's
/// count (for `model`). A
/// turn is a user message with everything up to the next user message (the answers to it);
/// system messages and the last turn are always kept. When even that does not fit, the engine's
/// own refusal says so at submission.
pub async fn trim_oldest_turns(
    engine: &dyn Engine,
    model: Option<&str>,
    messages: Vec<ChatMessage>,
    tools: Option<&Tools>,
    reserve: usize,
) -> Result<Fitted, EngineError> {
    let window = engine.context_window(model);
    let turn_of = turns(&messages);
    let droppable = turn_of.iter().flatten().max().copied().unwrap_or(0);
    let keep = |dropped: usize| -> Vec<ChatMessage> {
        messages
            .iter()
            .zip(&turn_of)
            .filter(|(_, turn)| turn.is_none_or(|t| t >= dropped))
            .map(|(m, _)| m.clone())
            .collect()
    };
    let (dropped, (kept, counted)) = fewest_to_drop(droppable, |dropped| {
        let kept = keep(dropped);
        async move {
            let counted = engine
                .count_tokens(model, kept.clone(), tools.cloned())
                .await?;
            Ok((counted.tokens + reserve <= window, (kept, counted)))
        }
    })
    .await?;
    let dropped_messages = messages.len() - kept.len();
    if dropped > 0 {
        tracing::debug!(dropped_messages, "conversation trimmed to fit the context");
    }
    Ok(Fitted {
        messages: kept,
        dropped: dropped_messages,
        counted,
    })
}

/// The turn each message belongs to (`None`: a system message, always kept). Messages before the
/// first user message belong to turn 0.
fn turns(messages: &[ChatMessage]) -> Vec<Option<usize>> {
    let mut turn = 0;
    let mut seen_user = false;
    messages
        .iter()
        .map(|m| match m.role {
            Role::System => None,
            Role::User => {
                if seen_user {
                    turn += 1;
                }
                seen_user = true;
                Some(turn)
            }
            // A tool call and its results stay with the turn that asked for them.
            Role::Assistant | Role::Tool => Some(turn),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bisection_finds_the_same_turns_as_dropping_one_at_a_time() {
        let sizes = [50, 40, 30, 30, 20, 10, 10];
        for limit in 0..=200 {
            let cost = |k: usize| sizes[k..].iter().sum::<usize>();
            let linear = (0..=sizes.len() - 1)
                .find(|&k| cost(k) <= limit)
                .unwrap_or(sizes.len() - 1);
            let (found, made) = fewest_to_drop(sizes.len() - 1, |k| async move {
                Ok((cost(k) <= limit, cost(k)))
            })
            .await
            .unwrap();
            assert_eq!(found, linear, "limit {limit}");
            assert_eq!(made, cost(found));
        }
    }

    #[test]
    fn a_turn_is_a_user_message_and_its_answers_and_system_messages_have_none() {
        let messages = [
            ChatMessage::system("s"),
            ChatMessage::user("u0"),
            ChatMessage::assistant("a0"),
            ChatMessage::user("u1"),
            ChatMessage::assistant("a1"),
            ChatMessage::user("u2"),
        ];
        assert_eq!(
            turns(&messages),
            vec![None, Some(0), Some(0), Some(1), Some(1), Some(2)]
        );
    }
}
