//! The shortcuts against the long way: candidates read from the logits against the whole
//! vocabulary, a mask computed ahead against one computed when needed. Same seed, same tokens.

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::ApproximateTokEnv;
use llguidance::{Matcher, ParserFactory};

use super::*;

/// Logits a model could give: a few likely tokens over a long flat tail (a deterministic
/// generator, different per step).
fn logits(n_vocab: usize, step: u64) -> Vec<f32> {
    let mut state = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n_vocab)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            // One token in 64 stands out.
            if state.is_multiple_of(64) {
                4.0 + 6.0 * unit
            } else {
                -2.0 + 4.0 * unit
            }
        })
        .collect()
}

fn settings() -> Vec<SamplingParams> {
    let base = SamplingParams {
        seed: Some(7),
        ..SamplingParams::default()
    };
    vec![
        base.clone(),
        // The Leafresh endpoints' sampling.
        SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 50,
            min_p: 0.0,
            repeat_penalty: 1.1,
            ..base.clone()
        },
        SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.3,
            logit_bias: vec![(3, 9.0), (17, -100.0)],
            ..base.clone()
        },
        SamplingParams {
            top_k: 5,
            frequency_penalty: 0.4,
            presence_penalty: 0.6,
            logit_bias: vec![(3, 2.0)],
            ..base
        },
    ]
}

#[test]
fn candidates_read_from_the_logits_give_the_tokens_of_the_whole_vocabulary() {
    let n_vocab = 4096;
    for params in settings() {
        let mut short = TokenSampler::for_vocabulary(n_vocab, LlamaToken(0), &params, None);
        let mut long = TokenSampler::for_vocabulary(n_vocab, LlamaToken(0), &params, None);
        assert!(short.keep.is_some());
        long.keep = None;
        let mut repeats = 0;
        let mut previous = Vec::new();
        for step in 0..300 {
            let mut logits = logits(n_vocab as usize, step);
            // The penalties and biases must matter: the tokens chosen lately stay likely.
            for &token in previous.iter().rev().take(8) {
                logits[token as usize] += 8.0;
            }
            let a = short.sample(&logits).expect("a token");
            let b = long.sample(&logits).expect("a token");
            assert_eq!(a, b, "step {step}, {params:?}");
            repeats += usize::from(previous.contains(&a.0));
            previous.push(a.0);
        }
        assert!(
            repeats > 0,
            "no token came twice: the penalties were not exercised"
        );
    }
}

fn json_matcher(env: &llguidance::toktrie::TokEnv) -> Matcher {
    let mut factory = ParserFactory::new_simple(env).expect("a parser factory");
    factory.set_stderr_log_level(0);
    let grammar = r#"start: "{\"name\": \"" /[a-z ]{1,24}/ "\", \"count\": " /[0-9]{1,3}/ "}""#;
    let matcher = Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(grammar.into())));
    assert!(!matcher.is_error(), "{:?}", matcher.get_error());
    matcher
}

#[test]
fn a_mask_computed_ahead_gives_the_tokens_of_one_computed_when_needed() {
    let env = ApproximateTokEnv::single_byte_env();
    let n_vocab = env.tok_trie().vocab_size() as i32;
    let eos = LlamaToken(env.tok_trie().eos_token() as i32);
    for params in settings() {
        for seed in 0..8 {
            let params = SamplingParams {
                seed: Some(seed),
                ..params.clone()
            };
            let mut lazy =
                TokenSampler::for_vocabulary(n_vocab, eos, &params, Some(json_matcher(&env)));
            let mut ahead =
                TokenSampler::for_vocabulary(n_vocab, eos, &params, Some(json_matcher(&env)));
            let mut text = Vec::new();
            for step in 0..200 {
                let logits = logits(n_vocab as usize, u64::from(seed) * 1000 + step);
                ahead.constraint_mut().expect("constrained").prepare_mask();
                let a = lazy.sample(&logits).expect("a token");
                let b = ahead.sample(&logits).expect("a token");
                assert_eq!(a, b, "seed {seed}, step {step}, {params:?}");
                if a == eos {
                    break;
                }
                text.push(a.0 as u8);
                let (f1, f2) = (lazy.forced(), ahead.forced());
                assert_eq!(f1, f2);
                text.extend(f1.iter().map(|t| t.0 as u8));
            }
            let text = String::from_utf8(text).expect("the grammar's bytes are ASCII");
            assert!(
                text.starts_with("{\"name\": \"") && text.ends_with('}'),
                "{text}"
            );
        }
    }
}
