//! What can go wrong with the upstream engine, and whose it is.

use crate::ErrorKind;

/// A failure of the upstream engine, or its refusal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// It cannot be reached, refused the connection, timed out before answering, or says it is
    /// busy: worth a retry later.
    #[error("the upstream engine is unavailable: {0}")]
    Unavailable(String),
    /// It answered wrongly: an error status that is not the request's fault, something that is
    /// not a chat completion stream, or a stream that broke off.
    #[error("the upstream engine failed: {0}")]
    Failed(String),
    /// It refused the request itself (a 4xx such as a prompt over its context).
    #[error("the upstream engine refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl UpstreamError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Unavailable(_) => ErrorKind::Unavailable,
            UpstreamError::Failed(_) => ErrorKind::BadGateway,
            UpstreamError::Rejected { .. } => ErrorKind::Client,
        }
    }
}
