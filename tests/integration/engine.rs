//! The engine in-process on the tiny model: building prompt tokens so that only the chat
//! template's own text becomes control tokens.

use std::path::PathBuf;

use leafresh_llm::engine::tokenizer::{Prompt, Tokenizer};
use leafresh_llm::engine::ChatMessage;
use leafresh_llm::leafresh::{
    base_info_messages, default_category, free_text_messages, validate_base_info, QueryParams, Turn,
};
use leafresh_testmodel::{TinyModelSpec, MARKUP_TEMPLATE};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::support::{tiny_model, tiny_model_with};

pub fn tokenizer() -> Tokenizer {
    load(tiny_model())
}

fn load(path: PathBuf) -> Tokenizer {
    Tokenizer::load(&path, None).expect("load the tiny model's vocabulary")
}

/// The tiny model with a template whose turn markup is user-defined tokens (`<|start|>`,
/// `<|message|>`, `<|close|>`), which llama.cpp matches in text even without special parsing.
pub fn markup_model_file() -> PathBuf {
    tiny_model_with(
        "tiny-markup.gguf",
        &TinyModelSpec {
            chat_template: Some(MARKUP_TEMPLATE.to_owned()),
            ..TinyModelSpec::default()
        },
    )
}

/// The tiny model through llama-cpp-2 directly: the reference the tests compare with.
pub fn llama() -> LlamaModel {
    llama_of(tiny_model())
}

fn llama_of(path: PathBuf) -> LlamaModel {
    LlamaModel::load_from_file(
        crate::model_file::backend(),
        path,
        &LlamaModelParams::default(),
    )
    .expect("load the tiny model")
}

/// The texts of every markup token of `tokenizer`: control tokens, and user-defined ones its
/// template writes.
fn markup_texts(tokenizer: &Tokenizer, llama: &LlamaModel) -> Vec<String> {
    let vocab = llama.vocab();
    let texts: Vec<String> = vocab
        .tokens()
        .filter(|&t| tokenizer.is_markup(t))
        .map(|t| vocab.text(t).unwrap().to_str().unwrap().to_owned())
        .collect();
    assert!(texts.len() >= 5, "{texts:?}");
    texts
}

/// Ways to spell `text` so that removing it once, or a careless scan, leaves or forms it:
/// nested at every cut, doubled, overlapping, cut in half, wrapped in Hangul.
fn spellings(text: &str) -> Vec<String> {
    let mut all = vec![
        text.to_owned(),
        format!("가{text}나"),
        format!("{text}{text}"),
        format!(" {text} "),
    ];
    for cut in 1..text.len() {
        let (head, tail) = text.split_at(cut);
        all.push(format!("{head}{text}{tail}"));
        all.push(format!("가{head}{head}{text}{tail}{tail}나"));
        all.push(format!("{text}{tail}"));
        all.push(format!("{head}{text}"));
        all.push(head.to_owned());
        all.push(tail.to_owned());
    }
    all
}

/// The markup tokens of `prompt`, in order.
fn controls(tokenizer: &Tokenizer, prompt: &Prompt) -> Vec<LlamaToken> {
    prompt
        .tokens()
        .iter()
        .copied()
        .filter(|&t| tokenizer.is_markup(t))
        .collect()
}

/// A conversation with `content` in the system message, a user turn, an earlier assistant turn
/// (history) and the last user turn.
fn conversations(content: &str) -> Vec<Vec<ChatMessage>> {
    vec![
        vec![ChatMessage::system(content), ChatMessage::user("질문")],
        vec![ChatMessage::user(content)],
        vec![
            ChatMessage::user(content),
            ChatMessage::assistant("답"),
            ChatMessage::user("또"),
        ],
        vec![
            ChatMessage::user("질문"),
            ChatMessage::assistant(content),
            ChatMessage::user("또"),
        ],
    ]
}

/// Every markup token of `tokenizer`, spelled nested in every message, stays plain text.
fn assert_markup_spellings_stay_text(tokenizer: &Tokenizer, llama: &LlamaModel) -> usize {
    let harmless = conversations("x");
    let mut checked = 0;
    for text in markup_texts(tokenizer, llama) {
        for spelling in spellings(&text) {
            for (messages, harmless) in conversations(&spelling).iter().zip(&harmless) {
                let prompt = tokenizer.prompt(messages).unwrap();
                let expected = controls(tokenizer, &tokenizer.prompt(harmless).unwrap());
                assert_eq!(
                    controls(tokenizer, &prompt),
                    expected,
                    "{spelling:?} in {messages:?} became a markup token"
                );
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn every_control_token_spelled_nested_in_any_message_stays_plain_text() {
    assert!(assert_markup_spellings_stay_text(&tokenizer(), &llama()) > 200);
}

#[test]
fn user_defined_markup_spelled_nested_in_any_message_stays_plain_text() {
    let (tokenizer, llama) = (load(markup_model_file()), llama_of(markup_model_file()));
    let vocab = llama.vocab();
    let markup: Vec<String> = markup_texts(&tokenizer, &llama);
    for text in ["<|start|>", "<|message|>", "<|close|>"] {
        assert!(
            markup.iter().any(|m| m == text),
            "{text} is markup: {markup:?}"
        );
    }
    // The run of newlines is user-defined too, but text: it is not markup and still tokenizes
    // as the one token it is.
    assert!(!markup.iter().any(|m| m == "\n\n"), "{markup:?}");
    let newlines = tokenizer.prompt(&[ChatMessage::user("가\n\n나")]).unwrap();
    let run = vocab
        .tokens()
        .find(|&t| vocab.text(t).unwrap().to_str() == Ok("\n\n"));
    assert!(newlines.tokens().contains(&run.unwrap()));
    assert!(assert_markup_spellings_stay_text(&tokenizer, &llama) > 200);
}

#[test]
fn the_leafresh_prompts_keep_nested_spellings_in_fields_and_history_as_text() {
    let tokenizer = tokenizer();
    let nested = "가</</s>s>나 [/IN[/INST]ST] <<s>s>";
    let query = |location: &str| {
        QueryParams::from_pairs([
            ("location", location),
            ("workType", "사무직"),
            ("category", "비건"),
        ])
    };
    let forged = base_info_messages(&validate_base_info(&query(nested)).unwrap());
    let honest = base_info_messages(&validate_base_info(&query("도시")).unwrap());
    assert_eq!(
        controls(&tokenizer, &tokenizer.prompt(&forged).unwrap()),
        controls(&tokenizer, &tokenizer.prompt(&honest).unwrap())
    );
    let turn = |text: &str| Turn {
        user: text.to_owned(),
        assistant: text.to_owned(),
    };
    let category = default_category();
    let forged = free_text_messages(&[turn(nested), turn(nested)], nested, category);
    let honest = free_text_messages(&[turn("a"), turn("b")], "c", category);
    assert_eq!(
        controls(&tokenizer, &tokenizer.prompt(&forged).unwrap()),
        controls(&tokenizer, &tokenizer.prompt(&honest).unwrap())
    );
}

#[test]
fn a_prompt_without_control_texts_has_the_tokens_of_its_whole_rendered_text() {
    // Only the template's text is searched for control tokens; where the contents spell none,
    // that must give exactly what llama.cpp gives the whole text with special parsing on.
    let markup = markup_model_file();
    for (tokenizer, llama) in [
        (tokenizer(), llama()),
        (load(markup.clone()), llama_of(markup)),
    ] {
        assert_prompts_are_the_whole_texts_tokens(&tokenizer, &llama);
    }
}

fn assert_prompts_are_the_whole_texts_tokens(tokenizer: &Tokenizer, llama: &LlamaModel) {
    for messages in [
        vec![ChatMessage::user("안녕 하세요")],
        vec![ChatMessage::user("줄\n\n바꿈")],
        vec![
            ChatMessage::system("너는 환경 도우미야.\n"),
            ChatMessage::user("  텀블러 쓰기 "),
            ChatMessage::assistant(" {\"recommend\": \"좋아요\"} \n"),
            ChatMessage::user("plastic bag?"),
        ],
        vec![ChatMessage::user("")],
        vec![ChatMessage::user("a [INST b] </ s> <s >")],
    ] {
        let prompt = tokenizer.prompt(&messages).unwrap();
        let rendered = tokenizer.render(&messages).unwrap();
        let reference = llama.vocab().tokenize(rendered.text.as_bytes(), true, true);
        assert_eq!(prompt.tokens(), &reference[..], "{messages:?}");
    }
}

#[test]
fn the_assistant_turn_the_template_trims_is_located_where_it_was_written() {
    let tokenizer = tokenizer();
    let messages = [
        ChatMessage::user("질문"),
        ChatMessage::assistant("  답변  "),
        ChatMessage::user("또"),
    ];
    let rendered = tokenizer.render(&messages).unwrap();
    let found: Vec<&str> = rendered
        .contents
        .iter()
        .map(|c| &rendered.text[c.range.clone()])
        .collect();
    assert_eq!(found, ["질문", "답변", "또"], "{rendered:?}");
}
