//! The embedded engine's model: a GGUF's weights loaded by llama.cpp, and the tokenizer built on
//! it. The model is shared (read-only, `Sync`); contexts are not (see `scheduler`).

use std::path::PathBuf;
use std::sync::Arc;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

use crate::tokenizer::{gguf, Tokenizer};
use crate::EngineError;

/// How to load the weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub path: PathBuf,
    pub n_gpu_layers: u32,
    /// Lock the weights in RAM.
    pub mlock: bool,
    /// Map the file (the default) or read it into memory.
    pub mmap: bool,
    /// The chat template to use instead of the file's: a name llama.cpp knows or a Jinja file.
    pub chat_template: Option<String>,
}

/// What was loaded, for the start-up log and `/v1/models`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub file_size: u64,
    pub n_layer: u32,
    pub n_params: u64,
    /// The GPU that holds the offloaded layers, when any are.
    pub gpu_device: Option<String>,
}

/// A loaded model: its weights (in the tokenizer's llama.cpp model) and its tokenizer.
pub struct Model {
    /// Shared with the constraint compiler, which needs the vocabulary only.
    tokenizer: Arc<Tokenizer>,
    info: ModelInfo,
}

impl Model {
    /// Checks the file, then loads it through llama.cpp. Every failure is a typed error that says
    /// what to do; nothing here aborts the process.
    pub fn load(options: &LoadOptions) -> Result<Self, EngineError> {
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(options.n_gpu_layers)
            .with_use_mlock(options.mlock)
            .with_use_mmap(options.mmap);
        let opened = gguf::open(&options.path, &params)?;
        let (n_layer, n_params) = (opened.llama.n_layer(), opened.llama.n_params());
        let tokenizer = Tokenizer::new(opened.llama, options.chat_template.as_deref())?;
        let info = ModelInfo {
            path: opened.path,
            file_size: opened.file_size,
            n_layer,
            n_params,
            gpu_device: (options.n_gpu_layers > 0).then(gpu_device).flatten(),
        };
        Ok(Self {
            tokenizer: Arc::new(tokenizer),
            info,
        })
    }

    /// Turns conversations into this model's prompt tokens.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub(crate) fn llama(&self) -> &LlamaModel {
        self.tokenizer.llama()
    }
}

/// The first GPU llama.cpp sees, as "name (description)".
fn gpu_device() -> Option<String> {
    use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
    list_llama_ggml_backend_devices()
        .into_iter()
        .find(|d| matches!(d.device_type, LlamaBackendDeviceType::Gpu))
        .map(|d| format!("{} ({})", d.name, d.description))
}
