//! What every streamed response shares: a bounded channel of SSE events per client, sending that
//! gives up on a client that stopped reading, and the response with its headers and keep-alive.

use std::future::Future;
use std::time::Duration;

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, Responder};
use actix_web_lab::sse;
use tokio::sync::mpsc;

/// Events waiting to be written to one client; the engine side never blocks on it.
const BUFFER: usize = 64;

/// A client that reads nothing for this long is treated as gone, so its slot is freed.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for `work` unless the client goes first (`None`). A client can leave while nothing is
/// being sent (queued, or during a long prompt): the keep-alive writes reveal it and close the
/// SSE channel.
pub async fn unless_client_gone<T>(
    tx: &mpsc::Sender<sse::Event>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = work => Some(value),
        () = tx.closed() => None,
    }
}

/// The channel a stream's task writes events into.
pub fn channel() -> (mpsc::Sender<sse::Event>, mpsc::Receiver<sse::Event>) {
    mpsc::channel(BUFFER)
}

/// Sends one event; false when the client is gone or has not read for `STALL_TIMEOUT`.
pub async fn deliver(tx: &mpsc::Sender<sse::Event>, event: sse::Event) -> bool {
    matches!(
        tokio::time::timeout(STALL_TIMEOUT, tx.send(event)).await,
        Ok(Ok(()))
    )
}

/// The SSE response: `text/event-stream; charset=utf-8` (the original's type: a client that
/// defaults to Latin-1 without the charset garbles Korean), `Cache-Control: no-cache` and
/// `X-Accel-Buffering: no`. Comment frames every `keepalive` (if not zero) keep proxies from
/// cutting a quiet stream and reveal a client that has gone.
pub fn response(
    rx: mpsc::Receiver<sse::Event>,
    keepalive: Duration,
    req: &HttpRequest,
) -> HttpResponse {
    let mut sse = sse::Sse::from_infallible_receiver(rx);
    if !keepalive.is_zero() {
        sse = sse.with_keep_alive(keepalive);
    }
    let mut response = sse
        .customize()
        .insert_header((CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header(("X-Accel-Buffering", "no"))
        .respond_to(req)
        .map_into_boxed_body();
    // actix-web-lab marks the stream `Content-Encoding: identity` to keep compression middleware
    // off it; RFC 9110 says identity is not to be sent, and this service compresses nothing.
    response.headers_mut().remove(CONTENT_ENCODING);
    response
}
