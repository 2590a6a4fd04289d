//! Opening a GGUF file with llama.cpp: the checks before llama.cpp sees it (which would fail on a
//! bad file with a less helpful message, or worse), and the one process-wide backend.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

/// The smallest file that can hold a GGUF header (magic, version, tensor and metadata counts).
const GGUF_HEADER_LEN: u64 = 24;

/// What can go wrong opening a GGUF file; each says what is wrong with the file or the machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GgufError {
    #[error("model file not found: {}", path.display())]
    Missing { path: PathBuf },
    #[error("{} is not a usable GGUF model: {why}", path.display())]
    NotGguf { path: PathBuf, why: String },
    #[error(
        "llama.cpp could not load {} (truncated download, unsupported architecture, or not \
         enough memory; see the llama.cpp messages above)",
        path.display()
    )]
    Rejected { path: PathBuf },
    #[error("llama.cpp backend failed to start: {0}")]
    Backend(String),
}

/// `LlamaBackend::init` succeeds once per process; everything shares this one. `get_or_init`
/// makes concurrent first callers wait for the one initialisation instead of racing to a second.
pub fn backend() -> Result<&'static LlamaBackend, GgufError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| GgufError::Backend(e.clone()))
}

/// Routes llama.cpp's own log messages (both engines open files with it) through `tracing`,
/// under the target `llama-cpp-2`.
pub fn send_logs_to_tracing() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// A GGUF file llama.cpp opened.
pub struct OpenedGguf {
    pub llama: LlamaModel,
    /// The file's absolute path.
    pub path: PathBuf,
    pub file_size: u64,
}

/// Checks the file, then loads it through llama.cpp with `params`. Every failure is a typed
/// error that says what is wrong; nothing here aborts the process.
pub fn open(path: &Path, params: &LlamaModelParams) -> Result<OpenedGguf, GgufError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let file_size = check_gguf_file(&path)?;
    let llama = LlamaModel::load_from_file(backend()?, &path, params)
        .map_err(|_| GgufError::Rejected { path: path.clone() })?;
    Ok(OpenedGguf {
        llama,
        path,
        file_size,
    })
}

/// Rejects what llama.cpp would fail on with a less helpful message (or worse): a missing path, a
/// directory, an empty or short file, a file that is not GGUF.
fn check_gguf_file(path: &Path) -> Result<u64, GgufError> {
    let meta = std::fs::metadata(path).map_err(|_| GgufError::Missing {
        path: path.to_path_buf(),
    })?;
    if !meta.is_file() {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            why: "it is not a regular file".into(),
        });
    }
    if meta.len() < GGUF_HEADER_LEN {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            why: format!("it is {} bytes long, too short to be a model", meta.len()),
        });
    }
    let mut header = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| GgufError::NotGguf {
            path: path.to_path_buf(),
            why: format!("it cannot be read: {e}"),
        })?;
    if &header[..4] != b"GGUF" {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            why: "it does not start with the GGUF magic bytes".into(),
        });
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            why: format!("GGUF version {version} is not supported (2 or 3 expected)"),
        });
    }
    Ok(meta.len())
}
