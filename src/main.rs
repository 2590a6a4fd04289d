//! Boots the service: settings, model, engine, HTTP. Nothing else lives here.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tracing_subscriber::EnvFilter;

use leafresh_llm::config::Config;
use leafresh_llm::engine::{self, EngineError, EngineSettings, LoadOptions, Model};
use leafresh_llm::http::{self, AppState};
use leafresh_llm::leafresh::SessionStore;
use leafresh_llm::metrics::Metrics;

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
    let (engine, engine_thread) = engine::scheduler::start(
        Arc::new(model),
        EngineSettings {
            ctx_size: config.ctx_size,
            parallel: config.parallel,
            batch_size: config.batch_size,
            threads: threads as i32,
            queue_size: config.queue_size as usize,
            queue_timeout: config.queue_timeout(),
            panic_at_step: config.debug_panic_at_step,
        },
    )?;
    exit_when_engine_dies(engine_thread);
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
        metrics: Arc::new(Metrics::new()),
        grammar: !config.no_grammar,
        sse_keepalive: config.sse_keepalive(),
        draining: AtomicBool::new(false),
        model_ids: config.model_ids(),
        api_key: config.api_key.clone(),
        api_key_leafresh: config.api_key_leafresh,
    });
    let app_state = state.clone();
    let server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(http::routes))
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
    let url = format!("http://{}:{}", display_host(config.host), config.port);
    tracing::info!("listening on {url} (test page: {url}/)");
    if config.host.is_loopback() {
        tracing::info!(
            "bound to a loopback address: only this machine can connect. To accept connections \
             from other machines, start with --host 0.0.0.0 (or LEAFRESH_HOST=0.0.0.0)"
        );
    }
    actix_web::rt::spawn(stop_on_signal(
        state,
        server.handle(),
        config.shutdown_timeout(),
    ));
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM or SIGINT: refuse new requests, give running streams `grace` to finish, end the rest
/// with an error event, then stop the server (the process then exits 0).
async fn stop_on_signal(state: web::Data<AppState>, server: ServerHandle, grace: Duration) {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for stop signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    state.draining.store(true, Ordering::Relaxed);
    let busy = |state: &AppState| {
        let stats = state.engine.stats();
        stats.active + stats.queued
    };
    tracing::info!(
        requests = busy(&state),
        grace_seconds = grace.as_secs(),
        "stop signal: refusing new requests, letting running ones finish"
    );
    let deadline = Instant::now() + grace;
    while busy(&state) > 0 && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    if busy(&state) > 0 {
        tracing::warn!(
            requests = busy(&state),
            "grace period over: ending the remaining streams"
        );
        state.engine.abort_all(EngineError::ShuttingDown);
        // Let the handlers write their final error events.
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    server.stop(true).await;
}

/// A panicked engine cannot serve again: exit non-zero (after the open streams had a moment to
/// send their error events) so that systemd restarts the service.
fn exit_when_engine_dies(engine_thread: std::thread::JoinHandle<bool>) {
    std::thread::spawn(move || {
        if engine_thread.join().unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(500));
            eprintln!("error: the inference engine panicked; exiting so that a supervisor restarts the service");
            std::process::exit(3);
        }
    });
}
fn display_host(host: std::net::IpAddr) -> String {
    match host {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}
