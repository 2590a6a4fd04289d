//! How many tokens a request may generate: what it asked for, capped by the room its prompt
//! leaves in the context window. A prompt that leaves no room is refused before any work.

use super::EngineError;

/// The number of new tokens a request may generate.
///
/// `requested` is the caller's maximum; `context` is the context window of the sequence that will
/// run it. Errors when the prompt fills the window, with both counts in the message.
pub fn max_new_tokens(
    prompt: usize,
    requested: usize,
    context: usize,
) -> Result<usize, EngineError> {
    let room = context.saturating_sub(prompt);
    if room == 0 {
        return Err(EngineError::PromptTooLong { prompt, context });
    }
    Ok(requested.min(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_tokens_fit_when_there_is_room() {
        assert_eq!(max_new_tokens(100, 512, 4096).unwrap(), 512);
    }

    #[test]
    fn the_context_window_caps_the_request() {
        assert_eq!(max_new_tokens(4000, 512, 4096).unwrap(), 96);
        assert_eq!(max_new_tokens(4095, 512, 4096).unwrap(), 1);
    }

    #[test]
    fn a_prompt_that_fills_the_window_is_refused_with_both_counts() {
        for prompt in [4096, 5000] {
            let err = max_new_tokens(prompt, 512, 4096).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&prompt.to_string()), "{message}");
            assert!(message.contains("4096"), "{message}");
        }
    }
}
