//! Operations: the health check, Prometheus metrics, the browser test page, and the answer for
//! unknown paths.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::error::Envelope;
use super::AppState;

/// The browser test page, embedded so the binary is all there is to deploy.
const TEST_PAGE: &str = include_str!("../assets/test_sse.html");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics))
        .route("/", web::get().to(test_page))
        .default_service(web::to(not_found));
}

/// 200 while the engine can serve. The port is bound only after the model is loaded, so before
/// that a client sees a refused connection; 503 once the engine has died (upstream mode: while the
/// upstream does not answer) or the server is stopping.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.engine.stats();
    if !stats.alive {
        let reason = match stats.engine {
            "upstream" => "the upstream engine is unreachable",
            _ => "the inference engine stopped",
        };
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "error", "reason": reason}));
    }
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "stopping"}));
    }
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.engine.stats()))
}

async fn test_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(TEST_PAGE)
}

/// An unknown path: under `/v1/` in OpenAI's error shape (the clients there read only that),
/// elsewhere the Leafresh envelope.
async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    if req.path().starts_with("/v1/") || req.path() == "/v1" {
        return super::openai::unknown_v1(req).await;
    }
    HttpResponse::NotFound().json(Envelope::new(
        404,
        "요청한 경로를 찾을 수 없습니다. (not found)",
        Value::Null,
    ))
}
