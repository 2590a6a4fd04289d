//! Operations: the health check, the browser test page, and the answer for unknown paths.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::error::Envelope;

/// The browser test page, embedded so the binary is all there is to deploy.
const TEST_PAGE: &str = include_str!("../assets/test_sse.html");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/", web::get().to(test_page))
        .default_service(web::to(not_found));
}

/// 200 once the model is loaded. The port is bound only after loading, so before that a client
/// sees a refused connection rather than a server that cannot answer.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn test_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(TEST_PAGE)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(Envelope::new(
        404,
        "요청한 경로를 찾을 수 없습니다. (not found)",
        Value::Null,
    ))
}
