//! The application factory in-process: the same `http::app` `main` serves, on the real engine
//! and the tiny model, driven by `actix_web::test` without a port or a child process.

use actix_web::{test, web};
use clap::Parser;
use leafresh_llm::config::Config;
use leafresh_llm::http::{self, AppState};

use crate::support::{encode, tiny_model};

fn state() -> web::Data<AppState> {
    crate::model_file::backend();
    let model = tiny_model();
    let config = Config::try_parse_from([
        "leafresh-llm",
        "--model",
        model.to_str().unwrap(),
        "--threads",
        "1",
        "--parallel",
        "1",
    ])
    .unwrap();
    let engine = leafresh_llm::engines::embedded(&config).unwrap().engine;
    web::Data::new(AppState::new(engine, &config))
}

#[actix_web::test]
async fn the_app_factory_serves_health_models_and_a_recommendation_in_process() {
    let app = test::init_service(http::app(state(), &[])).await;

    let health =
        test::call_service(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(health.status(), 200);

    let models: serde_json::Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/v1/models").to_request(),
    )
    .await;
    assert_eq!(models["data"][0]["id"], "tiny-llama", "{models}");

    let uri = format!(
        "/ai/chatbot/recommendation/base-info?location={}&workType={}&category={}",
        encode("도시"),
        encode("사무직"),
        encode("비건")
    );
    let response = test::call_service(&app, test::TestRequest::get().uri(&uri).to_request()).await;
    assert_eq!(response.status(), 200);
    let body = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    let last = body.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: close\n"), "{body}");
}
