//! Boots the service: settings, model, engine, HTTP. Nothing else lives here.

use std::process::ExitCode;
use std::time::Duration;

use actix_web::{web, HttpServer};
use anyhow::Context;

use leafresh_llm::config::Config;
use leafresh_llm::engine::{Engine, ErrorKind, WarmUp};
use leafresh_llm::engines::{self, LlamaInUse};
use leafresh_llm::http::{self, AppState};
use leafresh_llm::{lifecycle, logging};

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
    logging::init(&config.log_level, config.log_format);
    let mut llama = LlamaInUse::default();
    let served = serve(config, &mut llama);
    if let Err(e) = &served {
        tracing::error!("{e:#}");
    }
    // Every handle on the engine is gone with the server: its threads are ending. The exit
    // destroys llama.cpp's static objects, so it waits for them (see `LlamaInUse`).
    if !llama.wait_released(RELEASE_TIMEOUT) {
        tracing::warn!("threads still inside llama.cpp after {RELEASE_TIMEOUT:?}; exiting anyway");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// How long the exit waits for the engine's threads: one step of a long prompt on a big model.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

#[actix_web::main]
async fn serve(config: Config, llama: &mut LlamaInUse) -> anyhow::Result<()> {
    let started = match config.upstream_settings() {
        Some(settings) => engines::upstream(&config, settings)?,
        None => engines::embedded(&config)?,
    };
    *llama = started.llama;
    let engine = started.engine;
    if !config.no_warm_up {
        warm_up(engine.as_ref()).await?;
    }
    let state = web::Data::new(AppState::new(engine, &config));
    let app_state = state.clone();
    let cors_origins = config.cors_origins.clone();
    let server = HttpServer::new(move || http::app(app_state.clone(), &cors_origins))
    // Stop signals are ours to handle: streams get their grace period first.
    .disable_signals()
    .bind((config.host, config.port))
    .with_context(|| {
        format!(
            "cannot listen on {}:{} (is another process using the port? choose another with --port)",
            config.host, config.port
        )
    })?
    .run();
    let url = format!(
        "http://{}",
        std::net::SocketAddr::from((config.host, config.port))
    );
    tracing::info!("listening on {url} (test page: {url}/)");
    if config.host.is_loopback() {
        tracing::info!(
            "bound to a loopback address: only this machine can connect. To accept connections \
             from other machines, start with --host 0.0.0.0 (or LEAFRESH_HOST=0.0.0.0)"
        );
    }
    lifecycle::notify_ready();
    actix_web::rt::spawn(lifecycle::stop_on_signal(
        state,
        server.handle(),
        config.shutdown_timeout(),
    ));
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// Readies the instruction every Leafresh prompt begins with, before the port is bound and
/// systemd hears READY=1: the first request after a start is as fast as the next ones.
async fn warm_up(engine: &dyn Engine) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let warm = match engine
        .warm(leafresh_llm::leafresh::prompt::warm_up_messages())
        .await
    {
        Ok(warm) => warm,
        // A context too small for the instruction serves /v1 still; Leafresh requests will say
        // it too.
        Err(e) if e.kind() == ErrorKind::Client => {
            tracing::warn!(error = %e, "instruction prefix not computed");
            return Ok(());
        }
        Err(e) => return Err(e).context("computing the instruction prefix before serving"),
    };
    let ms = started.elapsed().as_millis() as u64;
    match warm {
        WarmUp::Computed { tokens } => tracing::info!(tokens, ms, "instruction prefix computed"),
        WarmUp::Loaded { tokens } => {
            tracing::info!(
                tokens,
                ms,
                "instruction prefix loaded from the prompt cache"
            )
        }
        WarmUp::Skipped => {}
    }
    Ok(())
}
