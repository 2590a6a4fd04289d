//! One error type for the Leafresh endpoints and the one place that maps it to a status and the
//! envelope `{"status", "message", "data"}`. Client mistakes are not logged as errors; server
//! faults are logged with detail and shown to the client without it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;

use super::body::BodyError;
use crate::engine::{EngineError, ErrorKind, UpstreamError};
use crate::leafresh::{QueryError, RecommendError, Rejection};
use crate::metrics::Outcome;

/// Seconds a client should wait before retrying when every slot and the queue are busy.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// The Leafresh envelope: every JSON body and every SSE `data:` has this shape.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub status: u16,
    pub message: String,
    pub data: T,
}

impl<T: Serialize> Envelope<T> {
    pub fn new(status: u16, message: impl Into<String>, data: T) -> Self {
        Self {
            status,
            message: message.into(),
            data,
        }
    }
}

/// Why a Leafresh request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LeafreshError {
    /// Validation or the topic filter (status and message come from the contract).
    #[error("{}", .0.message)]
    Rejected(Rejection),
    #[error("{0}")]
    Query(#[from] QueryError),
    /// The recommendation could not be made: the engine's error, no room for a whole answer, or
    /// (only without the grammar) a model text that is not an answer.
    #[error(transparent)]
    Recommend(#[from] RecommendError),
    #[error("API 키가 없거나 올바르지 않습니다. (missing or invalid API key: send `Authorization: Bearer <key>`)")]
    Unauthorized,
}

impl From<EngineError> for LeafreshError {
    fn from(error: EngineError) -> Self {
        LeafreshError::Recommend(RecommendError::Engine(error))
    }
}

impl From<Rejection> for LeafreshError {
    fn from(rejection: Rejection) -> Self {
        LeafreshError::Rejected(rejection)
    }
}

impl LeafreshError {
    pub fn status(&self) -> StatusCode {
        match self {
            LeafreshError::Rejected(r) => {
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            LeafreshError::Unauthorized => StatusCode::UNAUTHORIZED,
            LeafreshError::Query(_)
            | LeafreshError::Recommend(RecommendError::NoRoomForAnswer { .. }) => {
                StatusCode::BAD_REQUEST
            }
            LeafreshError::Recommend(RecommendError::Engine(e)) => engine_status(e),
            LeafreshError::Recommend(RecommendError::Unparseable(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A fault of the server (as opposed to the client's mistake or a busy server): its detail
    /// is logged, not shown.
    fn is_fault(&self) -> bool {
        self.status().is_server_error()
            && self.status() != StatusCode::SERVICE_UNAVAILABLE
            && !matches!(
                self,
                LeafreshError::Recommend(RecommendError::Unparseable(_))
            )
    }

    /// The message a client sees. The front end shows it to the person using the app, so it is a
    /// Korean sentence first, with the English detail in parentheses for its own mistakes; a
    /// fault gets a plain sentence (its detail is logged, not shown).
    pub fn client_message(&self) -> String {
        if self.is_fault() {
            return "추천을 생성하는 중 서버 오류가 발생했습니다. (internal error while generating)"
                .into();
        }
        match self {
            LeafreshError::Rejected(r) => r.message.clone(),
            LeafreshError::Query(_) => format!("요청 값을 해석할 수 없습니다. ({self})"),
            LeafreshError::Recommend(RecommendError::Engine(e)) => {
                format!("{} ({e})", engine_message(e))
            }
            LeafreshError::Recommend(RecommendError::NoRoomForAnswer { .. }) => format!(
                "대화가 너무 길어 답변할 공간이 부족합니다. 메시지를 줄이거나 대화를 \
                 초기화해 주세요. ({self})"
            ),
            LeafreshError::Recommend(RecommendError::Unparseable(e)) => format!(
                "모델의 답변을 추천 형식으로 해석할 수 없습니다. (the model's answer could not be \
                 parsed: {e})"
            ),
            LeafreshError::Unauthorized => self.to_string(),
        }
    }

    /// How a request that ended with this error is counted in the metrics.
    pub fn outcome(&self) -> Outcome {
        Outcome::of_error_status(self.status().as_u16())
    }

    pub fn data(&self) -> Value {
        match self {
            LeafreshError::Rejected(r) => r.data.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The envelope this error is sent as (a JSON body or an SSE `error` event). Called once per
    /// error sent, so this is where faults are logged.
    pub fn envelope(&self) -> Envelope<Value> {
        if self.is_fault() {
            log_fault(self);
        }
        Envelope::new(self.status().as_u16(), self.client_message(), self.data())
    }
}

impl ResponseError for LeafreshError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        response(self.status()).json(self.envelope())
    }
}

/// The one mapping of an engine error to an HTTP status, for both APIs.
pub fn engine_status(error: &EngineError) -> StatusCode {
    match error.kind() {
        ErrorKind::Client => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::Server => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error response with `status`: a busy server says when to retry (both APIs).
fn response(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
    }
    response
}

/// A server fault, logged with its detail (the client sees a plain sentence): the one place
/// both APIs log them.
fn log_fault(error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "request failed");
}

/// The Korean sentence for an engine error a Leafresh client can see. Every error has its own
/// case (no catch-all): a new one must be given its sentence. Server faults never reach here
/// (they get the plain fault sentence), but are listed for that reason.
fn engine_message(error: &EngineError) -> &'static str {
    match error {
        EngineError::Overloaded => "요청이 많아 처리할 수 없습니다. 잠시 후 다시 시도해 주세요.",
        EngineError::QueueTimeout { .. } => {
            "대기 시간이 초과되었습니다. 잠시 후 다시 시도해 주세요."
        }
        EngineError::ShuttingDown => "서버가 종료 중입니다. 잠시 후 다시 시도해 주세요.",
        EngineError::Stopped => "추론 엔진이 멈췄습니다. 잠시 후 다시 시도해 주세요.",
        EngineError::NotReady => {
            "추론 엔진이 아직 준비되지 않았습니다. 잠시 후 다시 시도해 주세요."
        }
        EngineError::Upstream(UpstreamError::Unavailable(_)) => {
            "추론 서버에 연결할 수 없습니다. 잠시 후 다시 시도해 주세요."
        }
        EngineError::Upstream(UpstreamError::Failed(_)) => {
            "추론 서버의 응답을 처리할 수 없습니다. 잠시 후 다시 시도해 주세요."
        }
        EngineError::Upstream(UpstreamError::Rejected { .. }) => "추론 서버가 요청을 거절했습니다.",
        EngineError::PromptTooLong { .. } | EngineError::PromptOverContext { .. } => {
            "메시지가 너무 깁니다. 메시지를 줄이거나 대화를 초기화해 주세요."
        }
        EngineError::InvalidPrompt(_) => "메시지에 쓸 수 없는 문자가 있습니다.",
        EngineError::TemplateRefused(_) => {
            "대화 형식이 모델의 채팅 템플릿에 맞지 않습니다. 대화를 초기화해 주세요."
        }
        EngineError::InvalidSchema(_)
        | EngineError::InvalidToolSchema(_)
        | EngineError::InfillUnsupported
        | EngineError::ToolsUnsupported => "요청한 답변 형식을 이 모델로 만들 수 없습니다.",
        EngineError::Gguf(_)
        | EngineError::Llama(_)
        | EngineError::Start(_)
        | EngineError::Template(_)
        | EngineError::Internal(_) => "추천을 생성하는 중 서버 오류가 발생했습니다.",
    }
}

/// An error of the OpenAI-compatible API, sent as `{"error": {"message", "type", "param", "code"}}`
/// (the shape the OpenAI SDKs turn into their typed exceptions).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl OpenAiError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    /// The same error with OpenAI's machine-readable `code` (`invalid_type`, `invalid_value`,
    /// `missing_required_parameter`, `integer_above_max_value`, ...).
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn model_not_found(model: &str) -> Self {
        // Echo the name only when it looks like one: a path or a long string stays out of the
        // body (and out of anything that logs bodies).
        let looks_like_a_name = model.len() <= 64
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-@+".contains(c));
        let named = if looks_like_a_name {
            format!("The model `{model}` does not exist")
        } else {
            "The requested model does not exist".to_string()
        };
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("{named}; GET /v1/models lists the models served here."),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// A body that is not a JSON object. serde's own message is kept for syntax errors (it says
    /// what and where: "expected value at line 1 column 1") but not for shape errors, whose
    /// message names our Rust types.
    pub fn from_json(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = match error.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                format!("The body is not valid JSON: {error}.")
            }
            Category::Data => {
                let message = format!(
                    "The body must be a JSON object with the request fields (`model`, \
                     `messages`, ...); got another JSON value at line {} column {}.",
                    error.line(),
                    error.column()
                );
                return Self::invalid("body", message).code("invalid_type");
            }
        };
        Self::invalid("body", message)
    }

    /// 404 for a request this API does not have (`what`: its method and path, echoed only when
    /// it is short plain ASCII), as OpenAI answers one: "Invalid URL (POST /v1/foo)".
    pub fn not_found(what: &str) -> Self {
        let plain = what.len() <= 160 && what.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        let message = if plain {
            format!("Invalid URL ({what})")
        } else {
            "Invalid URL".to_owned()
        };
        Self {
            status: StatusCode::NOT_FOUND,
            message,
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 404 for an object that does not exist (a stored response, ...).
    pub fn missing(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: Some("not_found"),
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Missing or invalid API key: send `Authorization: Bearer <key>`.".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<BodyError> for OpenAiError {
    fn from(error: BodyError) -> Self {
        let status = match error {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            message: format!("{}.", capitalized(&error.to_string())),
            kind: "invalid_request_error",
            param: Some("body".into()),
            code: None,
        }
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

impl From<EngineError> for OpenAiError {
    /// The status is [`engine_status`]'s; this adds OpenAI's type, parameter and code.
    fn from(error: EngineError) -> Self {
        let status = engine_status(&error);
        let client = |code| (None, code, error.to_string());
        let (param, code, message) = match (error.kind(), &error) {
            (_, EngineError::PromptTooLong { .. } | EngineError::PromptOverContext { .. }) => {
                client(Some("context_length_exceeded"))
            }
            // The client's `response_format` (the only schema a client can send).
            (_, EngineError::InvalidSchema(_)) => (
                Some("response_format.json_schema.schema"),
                None,
                error.to_string(),
            ),
            (_, EngineError::InvalidToolSchema(_)) => {
                (Some("tools"), Some("invalid_value"), error.to_string())
            }
            (_, EngineError::InfillUnsupported) => {
                (Some("suffix"), Some("invalid_value"), error.to_string())
            }
            (_, EngineError::ToolsUnsupported) => (
                Some("tool_choice"),
                Some("invalid_value"),
                error.to_string(),
            ),
            // The upstream's own words: vLLM and llama-server both say "context" for an overlong
            // prompt, which OpenAI codes as context_length_exceeded.
            (_, EngineError::Upstream(UpstreamError::Rejected { message, .. })) => client(
                message
                    .contains("context")
                    .then_some("context_length_exceeded"),
            ),
            (_, EngineError::InvalidPrompt(_)) => client(Some("invalid_value")),
            (ErrorKind::Client, _) => client(None),
            (_, EngineError::Upstream(UpstreamError::Unavailable(_))) => {
                client(Some("upstream_unavailable"))
            }
            (ErrorKind::Unavailable, _) => client(Some("overloaded")),
            (ErrorKind::BadGateway, _) => {
                log_fault(&error);
                (
                    None,
                    Some("upstream_error"),
                    "the upstream engine failed; see the server log".to_string(),
                )
            }
            (ErrorKind::Server, _) => {
                log_fault(&error);
                (None, None, "internal error while generating".to_string())
            }
        };
        Self {
            status,
            message,
            kind: if status.is_client_error() {
                "invalid_request_error"
            } else {
                "server_error"
            },
            param: param.map(str::to_owned),
            code,
        }
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        response(self.status).json(self.body())
    }
}

#[cfg(test)]
mod tests;
