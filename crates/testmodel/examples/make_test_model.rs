//! Writes a llama-architecture GGUF with random weights and Mistral v0.3's tokenizer layout and
//! chat template (or another model family's, `--family`): tiny for tests and manual runs of the server without the real model, or
//! full-size (`--preset mistral-7b`) for benchmarks. `--check` then loads the file with llama.cpp
//! and decodes a few tokens, so a benchmark model is known to work before a server is started.
//!
//! Run through `scripts/make-test-model`, or `cargo build --release --workspace --example
//! make_test_model` and `target/release/examples/make_test_model OUT.gguf [options]` (a build
//! with `-p leafresh-testmodel` alone compiles llama.cpp a second time; see Cargo.toml).

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use leafresh_testmodel::{
    quantize_with_llama_cpp, write_tiny_llama, QuantMix, TensorType, TinyModelSpec, FAMILIES,
    PRESETS,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const USAGE: &str = "\
Usage: make-test-model OUT.gguf [options]

Writes a llama-architecture GGUF: random weights, a SentencePiece vocabulary with all Hangul
syllables and byte fallback, and the Mistral-7B-Instruct-v0.3 chat template. Tiny by default;
the presets have real shapes and 4-bit weights, for benchmarks (text is gibberish, speed is real).

Options (defaults in brackets; shape options override the preset):
  --preset NAME   tiny [default], 1b (16x2048, ~0.62 GB) or mistral-7b (32x4096, ~4.1 GB);
                  1b and mistral-7b have 32,768 tokens and Q4_0 weights
  --family NAME   the chat template, special tokens and BOS/EOS settings of a model family:
                  qwen2.5, qwen3, llama3.1, hermes2pro, mistral-v0.3 [default], deepseek-r1,
                  gpt-oss or gemma3; its special tokens come after the --vocab tokens
  --layers N      transformer blocks [2]
  --embd N        hidden size [64]
  --ff N          feed-forward size [128]
  --heads N       attention heads [4]
  --kv-heads N    key/value heads [2]
  --ctx N         training context length [4096]
  --vocab N       vocabulary size, 12333..40104 [12333; 32768 with a big preset]
  --seed N        seed of the random weights [0x1eaf5eed]
  --f32 | --f16 | --q4_0
                  element type of the weight matrices [f32; q4_0 with a big preset]
  --quantize MIX   write F16 weights to a temporary file, then quantize them with llama.cpp's
                  llama_model_quantize (as llama-quantize does) to MIX: q4_k_m, q4_k_s, q5_k_m,
                  q6_k, q8_0 or q4_0; llama.cpp picks each tensor's type (Q6_K output, ...)
  --no-template   write no tokenizer.chat_template key
  --check         load the written file with llama.cpp and decode a few tokens
  --check-only    do not write: check OUT.gguf as it is (any GGUF, the real model too)
  -h, --help      print this help

Examples:
  make-test-model --preset mistral-7b --quantize q4_k_m --check target/bench-models/mistral-7b-q4_k_m.gguf
      # 4.37 GB like the real Q4_K_M file; needs 14.5 GB of free disk for the F16 step
  make-test-model --preset 1b --q4_0 target/bench-models/1b-q4_0.gguf
      # written directly, in seconds
  make-test-model --family qwen3 --check target/test-models/tiny-qwen3.gguf
      # Qwen3's template, <|im_start|>, <tool_call>, <think>..., no BOS added";

/// What the command line asks for.
struct Args {
    out: PathBuf,
    spec: TinyModelSpec,
    quantize: Option<QuantMix>,
    check: bool,
    write: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            // Ignored: a closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("make-test-model: {message}\n\nRun with --help for the options.");
            return ExitCode::from(2);
        }
    };
    let (out, spec) = (&args.out, &args.spec);
    // llama.cpp's backend is a process-wide singleton: one for quantizing and checking.
    let mut backend = None;
    if args.quantize.is_some() || args.check {
        match LlamaBackend::init() {
            Ok(mut b) => {
                if std::env::var_os("LEAFRESH_CHECK_LLAMA_LOGS").is_none() {
                    b.void_logs();
                }
                backend = Some(b);
            }
            Err(e) => {
                eprintln!("make-test-model: llama.cpp backend: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.write {
        let written = match args.quantize {
            None => write(out, spec),
            Some(mix) => write_quantized(out, spec, mix),
        };
        if let Err(err) = written {
            eprintln!("make-test-model: cannot write {}: {err}", out.display());
            return ExitCode::FAILURE;
        }
    }
    if let (true, Some(backend)) = (args.check, backend.as_ref()) {
        if let Err(message) = check(backend, out) {
            eprintln!(
                "make-test-model: check of {} failed: {message}",
                out.display()
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Writes the file and says how big it is and how long it took.
fn write(out: &Path, spec: &TinyModelSpec) -> std::io::Result<()> {
    let started = Instant::now();
    write_tiny_llama(out, spec)?;
    let elapsed = started.elapsed();
    let size = std::fs::metadata(out)?.len();
    let _ = writeln!(
        std::io::stdout(),
        "{}: {size} bytes ({:.1} MiB), {:?} weights, {} tokens, {} layers x {} embd, written in {:.2} s",
        out.display(),
        size as f64 / (1024.0 * 1024.0),
        spec.weight_type,
        spec.n_vocab,
        spec.n_layer,
        spec.n_embd,
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Writes F16 weights next to `out`, has llama.cpp quantize them to `mix` into `out`, and removes
/// the F16 file whatever happens.
fn write_quantized(out: &Path, spec: &TinyModelSpec, mix: QuantMix) -> std::io::Result<()> {
    let mut f16 = out.as_os_str().to_owned();
    f16.push(".f16.partial");
    let f16 = PathBuf::from(f16);
    let source = TinyModelSpec {
        weight_type: TensorType::F16,
        ..spec.clone()
    };
    let result = write(&f16, &source).and_then(|()| {
        let started = Instant::now();
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        quantize_with_llama_cpp(&f16, out, mix, threads)?;
        let size = std::fs::metadata(out)?.len();
        let _ = writeln!(
            std::io::stdout(),
            "{}: {size} bytes ({:.2} GB), quantized to {} by llama.cpp in {:.1} s",
            out.display(),
            size as f64 / 1e9,
            mix.name(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    });
    let _ = std::fs::remove_file(&f16);
    result
}

/// `Ok(None)` means help was asked for.
fn parse(args: &[String]) -> Result<Option<Args>, String> {
    // The preset first, wherever it stands, so that shape options always override it.
    let mut spec = TinyModelSpec::default();
    if let Some(i) = args.iter().position(|a| a == "--preset") {
        let name = args.get(i + 1).ok_or("--preset needs a value")?;
        spec = TinyModelSpec::preset(name)
            .ok_or_else(|| format!("unknown preset {name:?}; known: {}", PRESETS.join(", ")))?;
    }
    // Then the family, which changes only the tokenizer and template, so --no-template still wins.
    if let Some(i) = args.iter().position(|a| a == "--family") {
        let name = args.get(i + 1).ok_or("--family needs a value")?;
        spec = spec
            .with_family(name)
            .ok_or_else(|| format!("unknown family {name:?}; known: {}", FAMILIES.join(", ")))?;
    }
    let mut out = None;
    let mut check = false;
    let mut write = true;
    let mut quantize = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--preset" | "--family" => drop(value(arg)?),
            "--layers" => spec.n_layer = number(arg, &value(arg)?)?,
            "--embd" => spec.n_embd = number(arg, &value(arg)?)?,
            "--ff" => spec.n_ff = number(arg, &value(arg)?)?,
            "--heads" => spec.n_head = number(arg, &value(arg)?)?,
            "--kv-heads" => spec.n_head_kv = number(arg, &value(arg)?)?,
            "--ctx" => spec.context_length = number(arg, &value(arg)?)?,
            "--vocab" => spec.n_vocab = number(arg, &value(arg)?)?,
            "--seed" => spec.seed = seed(&value(arg)?)?,
            "--f32" => spec.weight_type = TensorType::F32,
            "--f16" => spec.weight_type = TensorType::F16,
            "--q4_0" | "--q4-0" => spec.weight_type = TensorType::Q4_0,
            "--quantize" => {
                let name = value(arg)?;
                quantize = Some(QuantMix::parse(&name).ok_or_else(|| {
                    format!(
                        "unknown --quantize {name:?}; known: {}",
                        QuantMix::NAMES.join(", ")
                    )
                })?);
            }
            "--no-template" => spec.chat_template = None,
            "--check" => check = true,
            "--check-only" => (check, write) = (true, false),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path if out.is_none() => out = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    let out = out.ok_or("missing OUT.gguf")?;
    spec.validate().map_err(|err| err.to_string())?;
    Ok(Some(Args {
        out,
        spec,
        quantize,
        check,
        write,
    }))
}

fn number(flag: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} expects a positive integer, got {value:?}"))
}

fn seed(value: &str) -> Result<u64, String> {
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|_| format!("--seed expects an integer (decimal or 0x hex), got {value:?}"))
}

/// Tokens generated by `--check`: enough for a stable tokens/s, few enough for a 7B on 2 cores.
const CHECK_TOKENS: usize = 16;
/// A Leafresh-like prompt: Korean, JSON, the `[INST]` markers as control tokens.
const CHECK_PROMPT: &str =
    "[INST] 도시에 사는 사무직을 위한 디지털 탄소 챌린지 세 개를 JSON으로 추천해줘.[/INST] {\"recommend\":\"";

/// Loads `path` with llama.cpp (as the service does: mmap, all cores), prefills
/// [`CHECK_PROMPT`] and decodes [`CHECK_TOKENS`] greedy tokens, checking every logit is finite.
/// Prints load time, prompt and generation speed.
fn check(backend: &LlamaBackend, path: &Path) -> Result<(), String> {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()) as i32;

    let started = Instant::now();
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .map_err(|e| format!("load: {e} (set LEAFRESH_CHECK_LLAMA_LOGS=1 for llama.cpp's log)"))?;
    let load_s = started.elapsed().as_secs_f64();

    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| format!("context: {e}"))?;
    let prompt = model.vocab().tokenize(CHECK_PROMPT.as_bytes(), true, true);

    let started = Instant::now();
    let mut batch = LlamaBatch::new(prompt.len().max(1), 1);
    batch
        .add_sequence(&prompt, 0, false)
        .map_err(|e| e.to_string())?;
    ctx.decode(&mut batch)
        .map_err(|e| format!("prefill: {e}"))?;
    let prefill_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut last = batch.n_tokens() - 1;
    let first_pos = prompt.len() as i32;
    for pos in first_pos..first_pos + CHECK_TOKENS as i32 {
        let next = greedy(ctx.get_logits_ith(last), model.n_vocab())
            .map_err(|e| format!("position {pos}: {e}"))?;
        batch.clear();
        batch
            .add(next, pos, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(&mut batch).map_err(|e| format!("decode: {e}"))?;
        last = 0;
    }
    greedy(ctx.get_logits_ith(last), model.n_vocab())?;
    let decode_s = started.elapsed().as_secs_f64();

    let _ = writeln!(
        std::io::stdout(),
        "check: loaded in {load_s:.2} s ({} params, {:.2} GB of tensors, {threads} threads); \
         prompt {} tokens in {prefill_s:.2} s ({:.1} tokens/s); \
         {CHECK_TOKENS} tokens decoded in {decode_s:.2} s ({:.2} tokens/s); logits finite",
        model.n_params(),
        model.size() as f64 / 1e9,
        prompt.len(),
        prompt.len() as f64 / prefill_s,
        CHECK_TOKENS as f64 / decode_s,
    );
    Ok(())
}

/// The token of the largest logit, after checking there is one finite logit per token. Greedy
/// by hand: a check needs no sampler state.
fn greedy(logits: &[f32], n_vocab: i32) -> Result<LlamaToken, String> {
    if logits.len() != n_vocab as usize || !logits.iter().all(|l| l.is_finite()) {
        return Err(format!("logits are not {n_vocab} finite values"));
    }
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    Ok(LlamaToken(best as i32))
}
