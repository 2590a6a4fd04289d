//! The settings of upstream mode: generation delegated to an OpenAI-compatible engine.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::engine::upstream::UpstreamSettings;

#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Generate with this OpenAI-compatible engine instead of loading a model (vLLM,
    /// llama-server, another leafresh-llm): its API base URL, e.g. http://10.0.0.5:8000/v1 (a
    /// bare http://10.0.0.5:8000 means its /v1).
    #[arg(long = "upstream", env = "LEAFRESH_UPSTREAM", value_name = "URL",
          value_parser = parse_upstream_url)]
    pub url: Option<String>,

    /// Sent to the upstream as `Authorization: Bearer KEY`.
    #[arg(
        long = "upstream-api-key",
        env = "LEAFRESH_UPSTREAM_API_KEY",
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// The upstream model to use (default: the first its /v1/models lists).
    #[arg(
        long = "upstream-model",
        env = "LEAFRESH_UPSTREAM_MODEL",
        value_name = "NAME"
    )]
    pub model: Option<String>,

    /// Seconds to wait for a connection to the upstream.
    #[arg(long = "upstream-connect-timeout", env = "LEAFRESH_UPSTREAM_CONNECT_TIMEOUT",
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,

    /// Seconds to wait for the upstream's answer to begin, and between two of its chunks.
    #[arg(long = "upstream-idle-timeout", env = "LEAFRESH_UPSTREAM_IDLE_TIMEOUT",
          default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout: u64,

    /// Count prompt tokens locally with this GGUF's vocabulary (the upstream model's file,
    /// loaded without weights) instead of asking the upstream.
    #[arg(long, env = "LEAFRESH_TOKENIZER", value_name = "FILE.gguf")]
    pub tokenizer: Option<PathBuf>,
}

impl UpstreamArgs {
    /// The engine's settings; `context` is the fallback context window, `parallel`,
    /// `queue_size` and `queue_timeout` the admission the embedded engine would have.
    pub fn settings(
        &self,
        url: &str,
        context: usize,
        parallel: usize,
        queue_size: usize,
        queue_timeout: Duration,
    ) -> UpstreamSettings {
        UpstreamSettings {
            base_url: url.to_owned(),
            api_key: self.api_key.clone(),
            model: self.model.clone(),
            context,
            parallel,
            queue_size,
            queue_timeout,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
        }
    }
}

/// An `http://` URL with a host: the OpenAI API base. A server's bare address
/// (`http://HOST:PORT`) means its `/v1`, where vLLM, llama-server and this service serve the API
/// (their `/models` and `/chat/completions` at the root are not the OpenAI API, or are
/// missing). HTTPS is refused with a way out: this service speaks plain HTTP to an engine on its
/// private network.
fn parse_upstream_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    let base = value.trim_end_matches('/');
    match url.scheme() {
        "http" if url.host().is_some() && matches!(url.path(), "" | "/") => {
            Ok(format!("{base}/v1"))
        }
        "http" if url.host().is_some() => Ok(base.to_owned()),
        "http" => Err("the URL has no host".into()),
        "https" => Err(
            "https is not supported: reach the engine over its private network with \
                        http://, or through a local TLS-terminating proxy"
                .into(),
        ),
        other => Err(format!("the scheme must be http, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_http_with_a_host() {
        assert_eq!(
            parse_upstream_url("http://10.0.0.5:8000/v1/").unwrap(),
            "http://10.0.0.5:8000/v1"
        );
        // A server's address alone: its OpenAI API is under /v1.
        for bare in ["http://10.0.0.5:8000", "http://10.0.0.5:8000/"] {
            assert_eq!(parse_upstream_url(bare).unwrap(), "http://10.0.0.5:8000/v1");
        }
        // Another path is the API base a proxy serves it under.
        assert_eq!(
            parse_upstream_url("http://gateway/llm/v1").unwrap(),
            "http://gateway/llm/v1"
        );
        assert!(parse_upstream_url("https://api.example.com/v1").is_err());
        assert!(parse_upstream_url("10.0.0.5:8000").is_err());
        assert!(parse_upstream_url("ftp://x/v1").is_err());
    }
}
