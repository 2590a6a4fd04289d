//! The synthetic models of other families ([`TinyModelSpec::family`]) against the real
//! llama.cpp: every special token of the family is one token with the type the engine will see,
//! the tokens that end a turn are end-of-generation and no others are, BOS/EOS/add-BOS are the
//! family's, and the GGUF carries the family's template byte for byte. The engine's
//! tool-calling and reasoning tests per family rely on all of this.
//!
//! The expected types are llama.cpp's, not only the file's: its loader rewrites a few by text
//! (gpt-oss's harmony markers become user-defined), and it decides end-of-generation by text
//! too, which is why the tables below list what llama.cpp ends on rather than what the file says.

use std::collections::BTreeSet;

use leafresh_testmodel::vocab::{TokenType, TOOL_TOKENS};
use leafresh_testmodel::{write_tiny_llama, TinyModelSpec, FAMILIES};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;
use llama_cpp_2::vocab::LlamaVocab;

/// What llama.cpp must make of one family's model.
struct Expected {
    family: &'static str,
    /// Every end-of-generation token, by text. `</s>` is one in every family: the base
    /// vocabulary has Mistral's EOS at id 2, and llama.cpp ends on `</s>` by its text.
    eog: &'static [&'static str],
    /// Tokens whose type llama.cpp rewrites on load, with the type it gives them.
    rewritten: &'static [(&'static str, TokenType)],
}

const EXPECTED: &[Expected] = &[
    Expected {
        family: "qwen2.5",
        eog: &["</s>", "<|endoftext|>", "<|im_end|>"],
        rewritten: &[],
    },
    Expected {
        family: "qwen3",
        eog: &["</s>", "<|endoftext|>", "<|im_end|>"],
        rewritten: &[],
    },
    Expected {
        family: "llama3.1",
        eog: &["</s>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        rewritten: &[],
    },
    Expected {
        family: "hermes2pro",
        eog: &["</s>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>"],
        rewritten: &[],
    },
    Expected {
        family: "mistral-v0.3",
        eog: &["</s>"],
        rewritten: &[],
    },
    Expected {
        family: "deepseek-r1",
        eog: &["</s>", "<｜end▁of▁sentence｜>"],
        rewritten: &[],
    },
    Expected {
        // <|end|> closes analysis messages, after which the model goes on with the final answer:
        // llama.cpp drops it from the end-of-generation set when <|return|> and <|call|> exist.
        family: "gpt-oss",
        eog: &["</s>", "<|call|>", "<|endoftext|>", "<|return|>"],
        rewritten: &[
            ("<|start|>", TokenType::UserDefined),
            ("<|message|>", TokenType::UserDefined),
            ("<|channel|>", TokenType::UserDefined),
            ("<|constrain|>", TokenType::UserDefined),
            ("<|end|>", TokenType::UserDefined),
        ],
    },
    Expected {
        family: "gemma3",
        eog: &["</s>", "<end_of_turn>", "<eos>"],
        rewritten: &[],
    },
];

fn text(vocab: &LlamaVocab<'_>, token: LlamaToken) -> String {
    vocab
        .text(token)
        .expect("token has text")
        .to_str()
        .expect("token text is UTF-8")
        .to_owned()
}

/// The family's special tokens with the type llama.cpp should give them. Mistral's are in the
/// base vocabulary rather than extra.
fn special_tokens(spec: &TinyModelSpec, expected: &Expected) -> Vec<(String, TokenType)> {
    let mut tokens = spec.extra_tokens.clone();
    if expected.family == "mistral-v0.3" {
        let base = ["<s>", "</s>", "[INST]", "[/INST]"]
            .into_iter()
            .chain(TOOL_TOKENS);
        tokens.extend(base.map(|t| (t.to_string(), TokenType::Control)));
    }
    for (token, ty) in &mut tokens {
        if let Some((_, rewritten)) = expected.rewritten.iter().find(|(t, _)| t == token) {
            *ty = *rewritten;
        }
    }
    tokens
}

#[test]
fn every_family_loads_with_its_special_tokens_eog_set_and_template() {
    assert_eq!(
        FAMILIES,
        EXPECTED.iter().map(|e| e.family).collect::<Vec<_>>()
    );
    let dir = tempfile::tempdir().unwrap();
    for expected in EXPECTED {
        let family = expected.family;
        let spec = TinyModelSpec::family(family).expect("a known family");
        let path = dir.path().join(format!("{family}.gguf"));
        write_tiny_llama(&path, &spec).expect("family model is written");
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(crate::model_file::backend(), &path, &params)
            .unwrap_or_else(|e| panic!("{family}: the model loads: {e}"));
        let vocab = model.vocab();

        for (token, ty) in special_tokens(&spec, expected) {
            let ids = vocab.tokenize(token.as_bytes(), false, true);
            assert_eq!(ids.len(), 1, "{family}: {token:?} is one token: {ids:?}");
            let id = ids[0];
            assert_eq!(text(&vocab, id), token, "{family}");
            let attr = vocab.attr(id).0;
            let control = attr.contains(LlamaTokenAttr::Control);
            let user_defined = attr.contains(LlamaTokenAttr::UserDefined);
            assert_eq!(
                (control, user_defined),
                (ty == TokenType::Control, ty == TokenType::UserDefined),
                "{family}: {token:?} should be {ty:?}, attr {attr:?}"
            );
            // User-defined tokens match even in client text; control ones only where the
            // template writes them (special parsing on).
            let plain = vocab.tokenize(token.as_bytes(), false, false);
            assert_eq!(plain == ids, user_defined, "{family}: {token:?} as text");
        }

        let eog: BTreeSet<String> = vocab
            .tokens()
            .filter(|t| vocab.is_eog(*t))
            .map(|t| text(&vocab, t))
            .collect();
        let want: BTreeSet<String> = expected.eog.iter().map(|t| t.to_string()).collect();
        assert_eq!(eog, want, "{family}: end-of-generation tokens");
        let eos = spec.eos.as_deref().unwrap_or("</s>");
        assert_eq!(text(&vocab, vocab.eos()), eos, "{family}");
        assert!(vocab.is_eog(vocab.eos()), "{family}");

        let bos = spec.bos.as_deref().unwrap_or("<s>");
        assert_eq!(text(&vocab, vocab.bos()), bos, "{family}");
        assert_eq!(vocab.should_add_bos(), spec.add_bos, "{family}");
        let hello = vocab.tokenize(b"hello", true, true);
        assert_eq!(hello[0] == vocab.bos(), spec.add_bos, "{family}: {hello:?}");

        let template = model
            .chat_template(None)
            .unwrap_or_else(|e| panic!("{family}: the model has a chat template: {e}"));
        assert_eq!(
            template.to_str().unwrap(),
            spec.chat_template.as_deref().unwrap(),
            "{family}"
        );
    }
}
