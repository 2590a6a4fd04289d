use serde_json::json;

use super::*;
use crate::llama::guidance::lark_accepts;

/// `lark_accepts` reads bytes, so markup is spelled out here.
fn quoted(text: &str) -> String {
    literal(text)
}

/// The functions of the families' reference examples (`specials.json`).
fn tools(choice: ToolChoice, parallel: bool) -> Tools {
    Tools {
        functions: vec![
            ToolFunction {
                name: "get_weather".into(),
                description: None,
                parameters: json!({"type": "object",
                    "properties": {"city": {"type": "string"},
                                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                    "required": ["city"]}),
            },
            ToolFunction {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "object",
                    "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}),
            },
        ],
        choice,
        parallel,
    }
}

/// Each family's calls as its model writes them: one call of get_weather, and two calls where the
/// syntax has them.
struct Example {
    syntax: CallSyntax,
    single: &'static str,
    parallel: Option<&'static str>,
}

const EXAMPLES: &[Example] = &[
    Example {
        syntax: CallSyntax::Mistral,
        single: r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}]"#,
        parallel: Some(
            r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}, {"name": "get_time", "arguments": {"timezone": "Asia/Seoul"}}]"#,
        ),
    },
    Example {
        syntax: CallSyntax::Hermes,
        single: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Seoul\", \"unit\": \"celsius\"}}\n</tool_call>",
        parallel: Some("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Seoul\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"Asia/Seoul\"}}\n</tool_call>"),
    },
    Example {
        syntax: CallSyntax::Llama3,
        single: r#"{"name": "get_weather", "parameters": {"city": "Seoul", "unit": "celsius"}}"#,
        parallel: None,
    },
    Example {
        syntax: CallSyntax::Llama3,
        single: r#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Seoul", "unit": "celsius"}}"#,
        parallel: None,
    },
    Example {
        syntax: CallSyntax::DeepSeek,
        single: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Seoul\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        parallel: Some("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Seoul\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{\"timezone\": \"Asia/Seoul\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    },
    Example {
        syntax: CallSyntax::Harmony,
        single: r#"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Seoul","unit":"celsius"}<|call|>"#,
        parallel: None,
    },
    Example {
        syntax: CallSyntax::Harmony,
        single: r#"<|channel|>analysis<|message|>날씨 도구를 불러야 한다.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Seoul","unit":"celsius"}<|call|>"#,
        parallel: None,
    },
    Example {
        // The recipient in the header, right after the generation prompt `<|start|>assistant`.
        syntax: CallSyntax::Harmony,
        single: r#" to=functions.get_weather<|channel|>commentary json<|message|>{"city":"Seoul","unit":"celsius"}<|call|>"#,
        parallel: None,
    },
    Example {
        syntax: CallSyntax::Generic,
        single: r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}]}"#,
        parallel: Some(
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Seoul", "unit": "celsius"}}, {"name": "get_time", "arguments": {"timezone": "Asia/Seoul"}}]}"#,
        ),
    },
];

fn grammar(syntax: CallSyntax, choice: ToolChoice, parallel: bool) -> String {
    calls_grammar(syntax, &tools(choice, parallel), &quoted)
}

#[test]
fn each_grammar_accepts_its_familys_calls() {
    for example in EXAMPLES {
        let one = grammar(example.syntax, ToolChoice::Required, false);
        assert!(
            lark_accepts(&one, example.single),
            "{one}\n{}",
            example.single
        );
        let named = grammar(
            example.syntax,
            ToolChoice::Function("get_weather".into()),
            false,
        );
        assert!(lark_accepts(&named, example.single), "{}", example.single);
        if let Some(parallel) = example.parallel {
            let several = grammar(example.syntax, ToolChoice::Auto, true);
            assert!(lark_accepts(&several, parallel), "{several}\n{parallel}");
            assert!(lark_accepts(&several, example.single), "{}", example.single);
        }
    }
}

#[test]
fn each_grammar_rejects_what_the_tools_do_not_allow() {
    for example in EXAMPLES {
        let syntax = example.syntax;
        let g = grammar(syntax, ToolChoice::Required, true);
        let wrong: [(&str, String); 5] = [
            (
                "unknown function",
                example.single.replace("get_weather", "get_wether"),
            ),
            (
                "missing required key",
                example
                    .single
                    .replace(r#""city": "Seoul", "#, "")
                    .replace(r#""city":"Seoul","#, ""),
            ),
            (
                "value outside the enum",
                example.single.replace("celsius", "kelvin"),
            ),
            ("unknown key", example.single.replace("unit", "units")),
            ("nothing", String::new()),
        ];
        for (what, text) in wrong {
            assert_ne!(text, example.single, "{syntax:?}: {what}");
            assert!(
                !lark_accepts(&g, &text),
                "{syntax:?} accepts {what}: {text}"
            );
        }
        let other = grammar(syntax, ToolChoice::Function("get_time".into()), true);
        assert!(
            !lark_accepts(&other, example.single),
            "{syntax:?}: a call of another function than the named one"
        );
        if let Some(parallel) = example.parallel {
            let single = grammar(syntax, ToolChoice::Required, false);
            assert!(!lark_accepts(&single, parallel), "{syntax:?}: two calls");
        }
    }
}

#[test]
fn markers_are_the_callers_terminals() {
    let token = |text: &str| match text {
        "<tool_call>" => "<[151657]>".to_owned(),
        "</tool_call>" => "<[151658]>".to_owned(),
        other => literal(other),
    };
    let g = calls_grammar(CallSyntax::Hermes, &tools(ToolChoice::Auto, true), &token);
    assert!(
        g.contains("call: <[151657]> \"\\n\" body \"\\n\" <[151658]>"),
        "{g}"
    );
    assert!(!g.contains("<tool_call>"));
}

#[test]
fn the_generic_auto_grammar_admits_an_answer_or_calls() {
    let auto = generic_answer_grammar(&tools(ToolChoice::Auto, true));
    let response = r#"{"response": "서울은 \"맑음\"입니다.\n"}"#;
    assert!(lark_accepts(&auto, response));
    assert!(lark_accepts(&auto, EXAMPLES[8].parallel.unwrap()));
    assert!(!lark_accepts(&auto, r#"{"response": 1}"#));
    let required = generic_answer_grammar(&tools(ToolChoice::Required, true));
    assert!(!lark_accepts(&required, response));
    assert!(lark_accepts(&required, EXAMPLES[8].single));
}

#[test]
fn nested_models_of_a_function_are_resolved_in_every_syntax() {
    let mut tools = tools(ToolChoice::Required, false);
    tools.functions[0].parameters = json!({
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}},
        "type": "object", "properties": {"place": {"$ref": "#/$defs/Place"}}, "required": ["place"]
    });
    let cases = [
        (CallSyntax::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"place\": {\"city\": \"서울\"}}}\n</tool_call>"),
        (CallSyntax::Llama3, r#"{"name": "get_weather", "parameters": {"place": {"city": "서울"}}}"#),
        (CallSyntax::DeepSeek, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"place\": {\"city\": \"서울\"}}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        (CallSyntax::Harmony, r#"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"place":{"city":"서울"}}<|call|>"#),
        (CallSyntax::Generic, r#"{"tool_calls": [{"name": "get_weather", "arguments": {"place": {"city": "서울"}}}]}"#),
    ];
    for (syntax, text) in cases {
        let g = calls_grammar(syntax, &tools, &quoted);
        assert!(lark_accepts(&g, text), "{syntax:?}: {g}");
        assert!(
            !lark_accepts(&g, &text.replace("city", "town")),
            "{syntax:?}"
        );
    }
}

/// Events with adjacent text, reasoning and fragments of the same call's arguments joined: what
/// a client assembles, whatever the pieces.
fn joined(events: Vec<Parsed>) -> Vec<Parsed> {
    let mut out: Vec<Parsed> = Vec::new();
    for event in events {
        match (out.last_mut(), event) {
            (_, Parsed::Text(t) | Parsed::Reasoning(t)) if t.is_empty() => panic!("empty text"),
            (Some(Parsed::Text(a)), Parsed::Text(b)) => a.push_str(&b),
            (Some(Parsed::Reasoning(a)), Parsed::Reasoning(b)) => a.push_str(&b),
            (
                Some(Parsed::Call(ToolCallEvent::Arguments {
                    index: i,
                    fragment: a,
                })),
                Parsed::Call(ToolCallEvent::Arguments { index, fragment }),
            ) if *i == index => {
                assert!(!fragment.is_empty());
                a.push_str(&fragment)
            }
            (_, event) => out.push(event),
        }
    }
    out
}

fn parse(syntax: CallSyntax, calling: bool, pieces: &[&str]) -> Vec<Parsed> {
    let mut parser = CallParser::new(syntax, calling);
    let mut events = Vec::new();
    for piece in pieces {
        events.extend(parser.push(piece));
    }
    events.extend(parser.finish());
    joined(events)
}

/// Every cut of `text` into two pieces, and into three.
fn cuts(text: &str) -> Vec<Vec<&str>> {
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    let mut cuts = Vec::new();
    for (n, &i) in bounds.iter().enumerate() {
        cuts.push(vec![&text[..i], &text[i..]]);
        for &j in &bounds[n..] {
            cuts.push(vec![&text[..i], &text[i..j], &text[j..]]);
        }
    }
    cuts
}

fn text(t: &str) -> Parsed {
    Parsed::Text(t.to_owned())
}

fn reasoning(t: &str) -> Parsed {
    Parsed::Reasoning(t.to_owned())
}

fn begin(index: usize, name: &str) -> Parsed {
    Parsed::Call(ToolCallEvent::Begin {
        index,
        name: name.to_owned(),
    })
}

fn arguments(index: usize, json: &str) -> Parsed {
    Parsed::Call(ToolCallEvent::Arguments {
        index,
        fragment: json.to_owned(),
    })
}

const WEATHER: &str = r#"{"city": "서울", "unit": "celsius"}"#;
const TIME: &str = r#"{"timezone": "Asia/Seoul"}"#;

struct ParseCase {
    syntax: CallSyntax,
    calling: bool,
    answer: String,
    events: Vec<Parsed>,
}

fn case(syntax: CallSyntax, calling: bool, answer: &str, events: Vec<Parsed>) -> ParseCase {
    ParseCase {
        syntax,
        calling,
        answer: answer.to_owned(),
        events,
    }
}

fn parse_cases() -> Vec<ParseCase> {
    use CallSyntax::*;
    let two_calls = || {
        vec![
            begin(0, "get_weather"),
            arguments(0, WEATHER),
            begin(1, "get_time"),
            arguments(1, TIME),
        ]
    };
    let with_text = |t: &str, mut events: Vec<Parsed>| {
        events.insert(0, text(t));
        events
    };
    vec![
        case(
            Mistral,
            false,
            &format!(r#"[TOOL_CALLS] [{{"name": "get_weather", "arguments": {WEATHER}}}, {{"name": "get_time", "arguments": {TIME}}}]</s>"#),
            two_calls(),
        ),
        case(
            Mistral,
            false,
            "서울은 맑아요. [TOOL_CALLS 아님]",
            vec![text("서울은 맑아요. [TOOL_CALLS 아님]")],
        ),
        case(
            Hermes,
            false,
            &format!("날씨를 볼게요.\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {WEATHER}}}\n</tool_call>\n<tool_call>\n{{\"arguments\": {TIME}, \"name\": \"get_time\"}}\n</tool_call>\n"),
            with_text("날씨를 볼게요.\n", two_calls()),
        ),
        case(
            Hermes,
            true,
            &format!("{{\"name\": \"get_weather\", \"arguments\": {WEATHER}}}\n</tool_call>"),
            vec![begin(0, "get_weather"), arguments(0, WEATHER)],
        ),
        case(
            Llama3,
            false,
            &format!("\n {{\"name\": \"get_weather\", \"parameters\": {WEATHER}}}"),
            vec![begin(0, "get_weather"), arguments(0, WEATHER)],
        ),
        case(
            Llama3,
            false,
            &format!("<|python_tag|>{{\"name\": \"get_weather\", \"parameters\": {WEATHER}}}"),
            vec![begin(0, "get_weather"), arguments(0, WEATHER)],
        ),
        case(
            Llama3,
            false,
            "서울의 날씨는 {맑음} 입니다 <|python",
            vec![text("서울의 날씨는 {맑음} 입니다 <|python")],
        ),
        case(
            DeepSeek,
            false,
            &format!("알겠습니다.\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{WEATHER}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{TIME}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
            with_text("알겠습니다.\n\n", two_calls()),
        ),
        case(
            Harmony,
            false,
            &format!("<|channel|>analysis<|message|>날씨 도구를 불러야 한다.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{WEATHER}<|call|>"),
            vec![reasoning("날씨 도구를 불러야 한다."), begin(0, "get_weather"), arguments(0, WEATHER)],
        ),
        case(
            Harmony,
            true,
            &format!(" to=functions.get_time<|channel|>commentary json<|message|>{TIME}<|call|>"),
            vec![begin(0, "get_time"), arguments(0, TIME)],
        ),
        case(
            Harmony,
            false,
            "<|channel|>analysis<|message|>생각 <|end|><|start|>assistant<|channel|>final<|message|>서울은 맑아요. <|channel|> 아님<|return|>",
            // Only the markers that end a message end it.
            vec![reasoning("생각 "), text("서울은 맑아요. <|channel|> 아님")],
        ),
        case(
            Generic,
            false,
            &format!(r#"{{"tool_calls": [{{"name": "get_weather", "arguments": {WEATHER}}}, {{"name": "get_time", "arguments": {TIME}}}]}}"#),
            two_calls(),
        ),
        case(
            Generic,
            false,
            r#"{"response": "서울은 \"맑음\"\n\u00e9 \ud83d\ude00 \\"}"#,
            vec![text("서울은 \"맑음\"\né 😀 \\")],
        ),
    ]
}

#[test]
fn answers_read_the_same_wherever_they_are_cut() {
    for ParseCase {
        syntax,
        calling,
        answer,
        events,
    } in parse_cases()
    {
        assert_eq!(
            parse(syntax, calling, &[&answer]),
            events,
            "{syntax:?}: {answer}"
        );
        for pieces in cuts(&answer) {
            assert_eq!(
                parse(syntax, calling, &pieces),
                events,
                "{syntax:?}: {pieces:?}"
            );
        }
    }
}

#[test]
fn called_says_whether_a_call_began() {
    for ParseCase {
        syntax,
        calling,
        answer,
        events,
    } in parse_cases()
    {
        let mut parser = CallParser::new(syntax, calling);
        parser.push(&answer);
        parser.finish();
        let begun = events
            .iter()
            .any(|e| matches!(e, Parsed::Call(ToolCallEvent::Begin { .. })));
        assert_eq!(parser.called(), begun, "{syntax:?}: {answer}");
    }
}

#[test]
fn a_marker_cut_by_the_pieces_end_waits_for_the_next_piece() {
    let mut parser = CallParser::new(CallSyntax::Hermes, false);
    assert_eq!(parser.push("좋아요 <tool"), vec![text("좋아요 ")]);
    assert_eq!(
        parser.push("_call>\n{\"name\": \"get_time\""),
        vec![begin(0, "get_time")]
    );
}
