//! Writes a tiny llama-architecture GGUF with random weights and Mistral v0.3's tokenizer layout
//! and chat template, for tests and manual runs of the server without the real model.
//!
//! Run through `scripts/make-test-model`, or:
//! `cargo run --release --example make_test_model -- OUT.gguf [options]`

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use leafresh_llm::testmodel::{vocab, write_tiny_llama, TensorType, TinyModelSpec};

const USAGE: &str = "\
Usage: make-test-model OUT.gguf [options]

Writes a tiny llama-architecture GGUF: random weights, a SentencePiece vocabulary with all
Hangul syllables and byte fallback, and the Mistral-7B-Instruct-v0.3 chat template.

Options (defaults in brackets):
  --layers N      transformer blocks [2]
  --embd N        hidden size [64]
  --ff N          feed-forward size [128]
  --heads N       attention heads [4]
  --kv-heads N    key/value heads [2]
  --ctx N         training context length [4096]
  --seed N        seed of the random weights [0x1eaf5eed]
  --f16           store weight matrices as F16 instead of F32
  --no-template   write no tokenizer.chat_template key
  -h, --help      print this help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, spec) = match parse(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            // Ignored: a closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("make-test-model: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let started = Instant::now();
    if let Err(err) = write_tiny_llama(&out, &spec) {
        eprintln!("make-test-model: cannot write {}: {err}", out.display());
        return ExitCode::FAILURE;
    }
    let elapsed = started.elapsed();
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        std::io::stdout(),
        "{}: {size} bytes ({:.1} MiB), {} tokens, {} layers x {} embd, written in {} ms",
        out.display(),
        size as f64 / (1024.0 * 1024.0),
        vocab::tiny_vocab().len(),
        spec.n_layer,
        spec.n_embd,
        elapsed.as_millis()
    );
    ExitCode::SUCCESS
}

/// `Ok(None)` means help was asked for.
fn parse(args: &[String]) -> Result<Option<(PathBuf, TinyModelSpec)>, String> {
    let mut spec = TinyModelSpec::default();
    let mut out = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--layers" => spec.n_layer = number(arg, &value(arg)?)?,
            "--embd" => spec.n_embd = number(arg, &value(arg)?)?,
            "--ff" => spec.n_ff = number(arg, &value(arg)?)?,
            "--heads" => spec.n_head = number(arg, &value(arg)?)?,
            "--kv-heads" => spec.n_head_kv = number(arg, &value(arg)?)?,
            "--ctx" => spec.context_length = number(arg, &value(arg)?)?,
            "--seed" => spec.seed = seed(&value(arg)?)?,
            "--f16" => spec.weight_type = TensorType::F16,
            "--no-template" => spec.chat_template = None,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path if out.is_none() => out = Some(PathBuf::from(path)),
            extra => return Err(format!("unexpected argument {extra}")),
        }
    }
    let out = out.ok_or("missing OUT.gguf")?;
    spec.validate().map_err(|err| err.to_string())?;
    Ok(Some((out, spec)))
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
