use super::*;

fn reasoning(t: &str) -> Parsed {
    Parsed::Reasoning(t.to_owned())
}

fn text(t: &str) -> Parsed {
    Parsed::Text(t.to_owned())
}

/// Adjacent pieces of the same kind joined: what a client assembles.
fn split(starts_open: bool, pieces: &[&str]) -> Vec<Parsed> {
    let mut splitter = ThinkSplitter::new("<think>", "</think>", starts_open);
    let mut out: Vec<Parsed> = Vec::new();
    let mut events: Vec<Parsed> = pieces.iter().flat_map(|p| splitter.push(p)).collect();
    events.extend(splitter.finish());
    for event in events {
        match (out.last_mut(), event) {
            (_, Parsed::Text(t) | Parsed::Reasoning(t)) if t.is_empty() => panic!("empty"),
            (Some(Parsed::Text(a)), Parsed::Text(b)) => a.push_str(&b),
            (Some(Parsed::Reasoning(a)), Parsed::Reasoning(b)) => a.push_str(&b),
            (_, event) => out.push(event),
        }
    }
    out
}

#[test]
fn thinking_and_answer_are_split_wherever_the_text_is_cut() {
    let cases: Vec<(bool, &str, Vec<Parsed>)> = vec![
        // Qwen3.
        (
            false,
            "<think>\n서울 날씨를\n 찾아야 한다.\n</think>\n\n맑아요. <think>는 글자",
            vec![
                reasoning("서울 날씨를\n 찾아야 한다."),
                text("맑아요. <think>는 글자"),
            ],
        ),
        // Qwen3 with thinking off: an empty block in the prompt, none in the answer.
        (false, "  맑아요.", vec![text("  맑아요.")]),
        (false, "<thin", vec![text("<thin")]),
        // DeepSeek-R1: the prompt opened the thinking.
        (
            true,
            "생각 중 </thin 아님\n</think>\n\n<tool_call>",
            vec![reasoning("생각 중 </thin 아님"), text("<tool_call>")],
        ),
        (
            true,
            "끝나지 않은 생각\n",
            vec![reasoning("끝나지 않은 생각")],
        ),
        (false, "<think>\n\n</think>\n\n답", vec![text("답")]),
    ];
    for (starts_open, answer, expected) in cases {
        assert_eq!(split(starts_open, &[answer]), expected, "{answer}");
        let bounds: Vec<usize> = (0..=answer.len())
            .filter(|&i| answer.is_char_boundary(i))
            .collect();
        for (n, &i) in bounds.iter().enumerate() {
            assert_eq!(split(starts_open, &[&answer[..i], &answer[i..]]), expected);
            for &j in &bounds[n..] {
                let pieces = [&answer[..i], &answer[i..j], &answer[j..]];
                assert_eq!(split(starts_open, &pieces), expected, "{pieces:?}");
            }
        }
    }
}

#[test]
fn thinking_says_where_the_answer_is() {
    let mut splitter = ThinkSplitter::new("<think>", "</think>", false);
    assert!(!splitter.thinking());
    splitter.push("<think>음");
    assert!(splitter.thinking());
    splitter.push("</think>답");
    assert!(!splitter.thinking());
    assert!(ThinkSplitter::new("<think>", "</think>", true).thinking());
}
