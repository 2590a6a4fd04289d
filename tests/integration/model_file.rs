//! The generated tiny model against the real llama.cpp: it loads with the shape it was written
//! with, its tokenizer behaves like Mistral's SentencePiece one (Korean per syllable, byte
//! fallback for what the vocabulary lacks), its chat template renders the `[INST]` format, and it
//! decodes to finite logits. Q4_0 weights and the 32k vocabulary of the benchmark presets are
//! checked here on the tiny shape (the presets themselves are gigabytes, never written in tests).
//!
//! Also home of [`backend`], the one llama.cpp backend every test module of this binary shares.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use leafresh_testmodel::vocab::{self, tiny_vocab, MISTRAL_VOCAB_LEN};
use leafresh_testmodel::{write_tiny_llama, TensorType, TinyModelSpec, MISTRAL_V03_CHAT_TEMPLATE};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::{LlamaVocab, VocabType};
use llama_cpp_2::ChatTemplateError;

/// The llama.cpp backend of this test binary: `LlamaBackend::init` works once per process.
/// llama.cpp's own logging is silenced unless `LEAFRESH_TEST_LLAMA_LOGS` is set (set it to see
/// why a model fails to load).
#[allow(dead_code)]
pub fn backend() -> &'static LlamaBackend {
    // One backend per process, shared with the engine (`LlamaBackend::init` works only once).
    static QUIET: OnceLock<()> = OnceLock::new();
    QUIET.get_or_init(|| {
        let enabled = std::env::var_os("LEAFRESH_TEST_LLAMA_LOGS").is_some();
        llama_cpp_2::send_logs_to_tracing(
            llama_cpp_2::LogOptions::default().with_logs_enabled(enabled),
        );
    });
    leafresh_llm::engine::tokenizer::gguf::backend().expect("llama.cpp backend initialises")
}

/// The default tiny model ([`TinyModelSpec::default`]), written once per test binary.
fn tiny_model_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| write_model("default", &TinyModelSpec::default()))
}

/// Writes `spec` to `<cargo target tmpdir>/model_file-<name>.gguf` (a prefix no other module
/// uses) and returns the path. The file is written aside and renamed into place, so test
/// binaries running at once never load half a file.
fn write_model(name: &str, spec: &TinyModelSpec) -> PathBuf {
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("model_file-{name}.gguf"));
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = dir.join(format!(
        "model_file-{name}.{}-{unique}.partial",
        std::process::id()
    ));
    write_tiny_llama(&partial, spec).expect("tiny model is written");
    std::fs::rename(&partial, &path).expect("tiny model is renamed into place");
    path
}

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load_from_file(backend(), path, &LlamaModelParams::default())
        .expect("the generated model loads")
}

/// The vocabulary pieces of `tokens`, with SentencePiece's `▁` as stored in the file.
fn pieces(vocab: &LlamaVocab<'_>, tokens: &[LlamaToken]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| {
            vocab
                .text(*t)
                .expect("token has text")
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Prefills `prompt` (with BOS, special tokens parsed) and returns the last position's logits
/// and the token greedy sampling picks there.
fn prefill(model: &LlamaModel, prompt: &str) -> (Vec<f32>, LlamaToken) {
    let params = LlamaContextParams::default().with_n_ctx(NonZeroU32::new(256));
    let mut ctx = model.new_context(backend(), params).expect("context");
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    batch.add_sequence(&tokens, 0, false).unwrap();
    ctx.decode(&mut batch).expect("prompt decodes");
    let last = batch.n_tokens() - 1;
    let logits = ctx.get_logits_ith(last).to_vec();
    let next = LlamaSampler::greedy().sample(&ctx, last);
    (logits, next)
}

#[test]
fn generated_model_loads_with_its_shape_and_tokenizer() {
    let spec = TinyModelSpec::default();
    let model = load(tiny_model_path());

    assert_eq!(model.n_vocab() as usize, tiny_vocab().len());
    assert_eq!(model.n_layer(), spec.n_layer);
    assert_eq!(model.n_embd() as u32, spec.n_embd);
    assert_eq!(model.n_head(), spec.n_head);
    assert_eq!(model.n_head_kv(), spec.n_head_kv);
    assert_eq!(model.n_ctx_train(), spec.context_length);
    assert_eq!(model.meta_val_str("general.architecture").unwrap(), "llama");

    let vocab = model.vocab();
    assert_eq!(vocab.vocab_type(), VocabType::SPM);
    assert_eq!(vocab.bos(), LlamaToken(vocab::BOS_ID as i32));
    assert_eq!(vocab.eos(), LlamaToken(vocab::EOS_ID as i32));
    assert!(vocab.should_add_bos());
    assert!(!vocab.should_add_eos());
    assert!(vocab.is_eog(vocab.eos()));
    let inst = LlamaToken(vocab::INST_ID as i32);
    assert!(vocab.is_control(inst));
    assert_eq!(vocab.text(inst).unwrap().to_str().unwrap(), "[INST]");
}

#[test]
fn korean_text_is_one_token_per_syllable_and_round_trips() {
    let model = load(tiny_model_path());
    let vocab = model.vocab();
    let text = "텀블러 사용하기";

    let tokens = vocab.tokenize(text.as_bytes(), false, false);
    // SentencePiece prefixes a space and writes spaces as ▁; "▁텀" and "▁사" are pieces of their
    // own, so each word's space merges into its first syllable.
    assert_eq!(
        pieces(&vocab, &tokens),
        ["▁텀", "블", "러", "▁사", "용", "하", "기"]
    );
    assert_eq!(vocab.detokenize(&tokens, false, false), text.as_bytes());

    let with_bos = vocab.tokenize(text.as_bytes(), true, false);
    assert_eq!(with_bos[0], vocab.bos());
    assert_eq!(with_bos[1..], tokens[..]);
    // Careful: when llama.cpp strips a leading BOS it keeps the prefix space SentencePiece added.
    let detokenized = vocab.detokenize(&with_bos, true, false);
    assert_eq!(detokenized, format!(" {text}").as_bytes());
}

#[test]
fn jamo_and_emoji_fall_back_to_bytes_and_round_trip() {
    let model = load(tiny_model_path());
    let vocab = model.vocab();
    let text = "ㅅㅂ 😀";

    let tokens = vocab.tokenize(text.as_bytes(), false, false);
    #[rustfmt::skip]
    let expected = [
        "▁",
        "<0xE3>", "<0x85>", "<0x85>", // ㅅ U+3145
        "<0xE3>", "<0x85>", "<0x82>", // ㅂ U+3142
        "▁",
        "<0xF0>", "<0x9F>", "<0x98>", "<0x80>", // 😀 U+1F600
    ];
    assert_eq!(pieces(&vocab, &tokens), expected);

    // Each byte token's piece is one raw byte, not valid UTF-8 on its own: whoever streams text
    // must buffer across tokens. Concatenated, the pieces are the text (with the prefix space).
    let raw: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| vocab.token_to_piece(*t, false, None))
        .collect();
    assert_eq!(raw[1], [0xE3]);
    assert!(std::str::from_utf8(&raw[1]).is_err());
    assert_eq!(raw.concat(), format!(" {text}").as_bytes());
    assert_eq!(vocab.detokenize(&tokens, false, false), text.as_bytes());
}

#[test]
fn chat_template_renders_the_mistral_inst_format() {
    let model = load(tiny_model_path());
    let template = model
        .chat_template(None)
        .expect("the model has a chat template");
    assert_eq!(template.to_str().unwrap(), MISTRAL_V03_CHAT_TEMPLATE);

    let chat: Vec<LlamaChatMessage> = [
        ("system", "You are terse."),
        ("user", "Hello"),
        ("assistant", " Hi there "),
        ("user", "텀블러 사용하기"),
    ]
    .into_iter()
    .map(|(role, content)| LlamaChatMessage::new(role.into(), content.into()).unwrap())
    .collect();
    let prompt = model.apply_chat_template(&template, &chat, true).unwrap();
    // llama.cpp's built-in mistral-v3 format: the system text is folded into the first [INST],
    // the assistant turn is trimmed and closed with </s>.
    assert_eq!(
        prompt,
        "[INST] You are terse.\n\nHello[/INST] Hi there</s>[INST] 텀블러 사용하기[/INST]"
    );

    // The template's markers are control tokens once special tokens are parsed.
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    let id = |i: u32| LlamaToken(i as i32);
    assert_eq!(tokens[..2], [vocab.bos(), id(vocab::INST_ID)]);
    assert_eq!(tokens.last(), Some(&id(vocab::INST_END_ID)));
    assert!(tokens.contains(&id(vocab::EOS_ID)));
}

#[test]
fn a_prompt_decodes_to_finite_logits() {
    let model = load(tiny_model_path());
    let (logits, next) = prefill(&model, "[INST] 텀블러 사용하기 ㅅㅂ 😀 {\"title\":[/INST]");

    assert_eq!(logits.len(), model.n_vocab() as usize);
    assert!(logits.iter().all(|l| l.is_finite()));
    // Random weights, not zeros: the logits must tell tokens apart.
    let (min, max) = logits
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
    assert!(max - min > 1e-3, "logits are flat: {min}..{max}");
    assert!((0..model.n_vocab()).contains(&next.0));

    // Same file, same prompt, greedy: the same token (tests can rely on determinism).
    let (_, again) = prefill(&model, "[INST] 텀블러 사용하기 ㅅㅂ 😀 {\"title\":[/INST]");
    assert_eq!(next, again);
}

#[test]
fn f16_weights_load_and_decode() {
    let spec = TinyModelSpec {
        weight_type: TensorType::F16,
        ..TinyModelSpec::default()
    };
    let model = load(&write_model("f16", &spec));
    let (logits, _) = prefill(&model, "[INST] 사용하기[/INST]");
    assert_eq!(logits.len(), model.n_vocab() as usize);
    assert!(logits.iter().all(|l| l.is_finite()));
}

#[test]
fn model_without_template_loads_but_has_no_chat_template() {
    let spec = TinyModelSpec {
        chat_template: None,
        ..TinyModelSpec::default()
    };
    let model = load(&write_model("no-template", &spec));
    assert!(matches!(
        model.chat_template(None),
        Err(ChatTemplateError::MissingTemplate)
    ));
    // Everything else is still there.
    assert_eq!(model.n_vocab() as usize, tiny_vocab().len());
}

#[test]
fn q4_0_weights_with_a_mistral_sized_vocabulary_load_and_decode() {
    let spec = TinyModelSpec {
        weight_type: TensorType::Q4_0,
        n_vocab: MISTRAL_VOCAB_LEN as u32,
        ..TinyModelSpec::default()
    };
    let model = load(&write_model("q4_0", &spec));
    assert_eq!(model.n_vocab() as usize, MISTRAL_VOCAB_LEN);
    assert_eq!(model.meta_val_str("general.file_type").unwrap(), "2"); // MOSTLY_Q4_0
                                                                       // Every matrix is 18 bytes per 32 weights (4.5 bits); only the tiny norms are F32.
    let bytes_per_weight = model.size() as f64 / model.n_params() as f64;
    assert!(
        (bytes_per_weight - 18.0 / 32.0).abs() < 0.005,
        "{bytes_per_weight} bytes per weight"
    );

    // The extra 20k pieces make Korean words single tokens where the tiny vocabulary needs one
    // per syllable, and the text still round-trips.
    let vocab = model.vocab();
    let text = "텀블러 사용하기 챌린지";
    let tokens = vocab.tokenize(text.as_bytes(), false, false);
    assert_eq!(pieces(&vocab, &tokens), ["▁텀블러", "▁사용하기", "▁챌린지"]);
    assert_eq!(vocab.detokenize(&tokens, false, false), text.as_bytes());

    let (logits, next) = prefill(&model, "[INST] 텀블러 사용하기 ㅅㅂ 😀 {\"title\":[/INST]");
    assert_eq!(logits.len(), MISTRAL_VOCAB_LEN);
    assert!(logits.iter().all(|l| l.is_finite()));
    let (min, max) = logits
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
    assert!(max - min > 1e-3, "logits are flat: {min}..{max}");
    assert!((0..model.n_vocab()).contains(&next.0));
}
