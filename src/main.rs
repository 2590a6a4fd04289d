//! Boots the service: settings, model, engine, HTTP. Nothing else lives here.

use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{web, HttpServer};
use anyhow::Context;

use leafresh_llm::config::Config;
use leafresh_llm::engine::llama::{LlamaEngine, Model};
use leafresh_llm::engine::upstream::{UpstreamEngine, UpstreamSettings};
use leafresh_llm::engine::{Engine, WarmUp};
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
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[actix_web::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    let engine = match config.upstream_settings() {
        Some(settings) => upstream_engine(&config, settings)?,
        None => embedded_engine(&config)?,
    };
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

/// llama.cpp in this process: loads the model and starts the inference thread.
fn embedded_engine(config: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    let model = Model::load(&config.load_options())?;
    let info = model.info().clone();
    let settings = config.engine_settings();
    let threads = settings.threads;
    let (engine, engine_thread) = LlamaEngine::start(Arc::new(model), settings)?;
    let engine = engine.with_model_ids(config.model_ids());
    lifecycle::exit_when_engine_dies(engine_thread);
    tracing::info!(
        model = %info.path.display(),
        size_mib = info.file_size / (1024 * 1024),
        layers = info.n_layer,
        params_m = info.n_params / 1_000_000,
        context = config.ctx_size,
        context_per_slot = engine.context_window(),
        parallel = config.parallel,
        threads,
        gpu_layers = info.n_layer.min(config.n_gpu_layers),
        gpu_device = %info.gpu_device.as_deref().unwrap_or("none"),
        cache_types = %format_args!("{}/{}", config.cache_type_k.name(), config.cache_type_v.name()),
        chat_template = %info.template_source,
        grammar = !config.no_grammar,
        fast_forward = !config.no_fast_forward,
        "model loaded"
    );
    Ok(Arc::new(engine))
}

/// Upstream mode: no weights here; the upstream may still be down (the background check says
/// when it answers).
fn upstream_engine(config: &Config, settings: UpstreamSettings) -> anyhow::Result<Arc<dyn Engine>> {
    let tokenizer = config
        .tokenizer_options()
        .map(|options| Model::load(&options))
        .transpose()?;
    tracing::info!(
        upstream = %settings.base_url,
        model = settings.model.as_deref().unwrap_or("(the first it lists)"),
        parallel = settings.parallel,
        tokenizer = %config.upstream.tokenizer.as_deref().map_or("(the upstream's)".into(), |p| p.display().to_string()),
        grammar = !config.no_grammar,
        "upstream mode: generation is delegated; no model is loaded here"
    );
    match &tokenizer {
        Some(_) => tracing::info!(
            "prompts are rendered and tokenized here and sent as token ids (/v1/completions), \
             so client text stays text on the upstream (to another instance of this service: \
             chat requests, its engine keeps text as text itself)"
        ),
        None => tracing::warn!(
            "without --tokenizer the upstream renders and tokenizes each prompt itself: its own \
             tokenizer decides whether client text that spells a control token becomes one"
        ),
    }
    Ok(Arc::new(UpstreamEngine::start(settings, tokenizer)?))
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
        Err(e) if e.is_client_error() => {
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
