//! The process around the server: systemd notifications, the graceful stop on SIGTERM/SIGINT,
//! and exiting when the inference engine died.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web;
use sd_notify::NotifyState;

use crate::engine::EngineError;
use crate::http::AppState;

/// Tells systemd (`Type=notify`) that the service is ready. Called after the model is loaded and
/// the port is bound; a no-op when not started by systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!("could not notify systemd of readiness: {e}");
    }
}

/// SIGTERM or SIGINT: refuse new requests, give running streams `grace` to finish, end the rest
/// with an error event, then stop the server (the process then exits 0).
pub async fn stop_on_signal(state: web::Data<AppState>, server: ServerHandle, grace: Duration) {
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
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    state
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Every request begun and not ended: those still being validated, counted or fitted, those
    // waiting for a slot, those generating.
    let busy = |state: &AppState| state.metrics.in_flight();
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
        // Let the handlers write their final error events: every request still in flight ends
        // with one (the engine refuses what arrives after the abort).
        let deadline = Instant::now() + Duration::from_secs(5);
        while busy(&state) > 0 && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The last events are handed to the server; a moment for it to write them out.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    server.stop(true).await;
}

/// A panicked engine cannot serve again: exit non-zero (after the open streams had a moment to
/// send their error events) so that systemd restarts the service.
pub fn exit_when_engine_dies(engine_thread: JoinHandle<bool>) {
    std::thread::spawn(move || {
        if engine_thread.join().unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(500));
            tracing::error!(
                "the inference engine panicked; exiting so that a supervisor restarts the service"
            );
            std::process::exit(3);
        }
    });
}
