//! Log output: text or JSON lines on stderr, the level from `--log-level` unless `RUST_LOG` says
//! more, and llama.cpp's own messages routed through the same subscriber.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Starts logging. llama.cpp logs under the target `llama-cpp-2` and is chatty at info level: only
/// its warnings and errors show unless asked for (the crate's bridge, `llama_cpp_2`, only
/// complains about its own formatting).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},llama-cpp-2=warn,llama_cpp_2=error,actix_server=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
    crate::engine::tokenizer::gguf::send_logs_to_tracing();
}
