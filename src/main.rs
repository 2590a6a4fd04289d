//! Boots the service: settings, model, engine, HTTP. Nothing else lives here.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tracing_subscriber::EnvFilter;

use leafresh_llm::config::Config;
use leafresh_llm::engine::{self, EngineSettings, LoadOptions, Model};
use leafresh_llm::http::{self, AppState};
use leafresh_llm::leafresh::SessionStore;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    init_logging();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// llama.cpp logs under the target `llama-cpp-2` and is chatty at info level; its warnings and
/// errors still show. The crate's own log bridge (`llama_cpp_2`) only complains about formatting.
const DEFAULT_LOG_FILTER: &str = "info,llama-cpp-2=warn,llama_cpp_2=error,actix_server=warn";

fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

#[actix_web::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let threads = config.threads();
    let model = Model::load(&LoadOptions {
        path: config.model.clone(),
        n_gpu_layers: config.n_gpu_layers,
    })?;
    let info = model.info().clone();
    let engine = engine::scheduler::start(
        Arc::new(model),
        EngineSettings {
            ctx_size: config.ctx_size,
            parallel: config.parallel,
            batch_size: config.batch_size,
            threads: threads as i32,
            queue_size: config.queue_size as usize,
        },
    )?;
    tracing::info!(
        model = %info.path.display(),
        size_mib = info.file_size / (1024 * 1024),
        layers = info.n_layer,
        params_m = info.n_params / 1_000_000,
        context = config.ctx_size,
        context_per_slot = engine.slot_context(),
        parallel = config.parallel,
        threads,
        gpu_layers = config.n_gpu_layers,
        chat_template = info.template_source,
        grammar = !config.no_grammar,
        "model loaded"
    );

    let state = web::Data::new(AppState {
        engine,
        sessions: Arc::new(SessionStore::new(
            config.max_sessions as usize,
            config.session_ttl(),
        )),
        grammar: !config.no_grammar,
    });
    let address = (config.host, config.port);
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
        .bind(address)
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (is another process using the port? choose another with --port)",
                config.host, config.port
            )
        })?;
    let url = format!("http://{}:{}", display_host(config.host), config.port);
    tracing::info!("listening on {url} (test page: {url}/)");
    if config.host.is_loopback() {
        tracing::info!(
            "bound to a loopback address: only this machine can connect. To accept connections \
             from other machines, start with --host 0.0.0.0 (or LEAFRESH_HOST=0.0.0.0)"
        );
    }
    server.run().await?;
    Ok(())
}

fn display_host(host: std::net::IpAddr) -> String {
    match host {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}
