//! Re-quantizes a written GGUF through llama.cpp's own `llama_model_quantize`, for the k-quant
//! mixes (Q4_K_M and friends) that the real model files use. Writing those blocks by hand would
//! mean re-implementing llama.cpp's per-tensor type choices (Q6_K output, Q6_K on some
//! `attn_v`/`ffn_down` layers); asking llama.cpp gives the same file layout as `llama-quantize`.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// A llama.cpp file type (`llama_ftype`) that [`quantize_with_llama_cpp`] can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMix {
    Q4_0,
    Q4KS,
    Q4KM,
    Q5KM,
    Q6K,
    Q8_0,
}

impl QuantMix {
    /// The names accepted on command lines, as `llama-quantize` spells them (lowercase).
    pub const NAMES: &'static [&'static str] =
        &["q4_0", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k", "q8_0"];

    /// The mix named `name` (case-insensitive, `-` or `_`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "q4_0" => Some(Self::Q4_0),
            "q4_k_s" => Some(Self::Q4KS),
            "q4_k_m" => Some(Self::Q4KM),
            "q5_k_m" => Some(Self::Q5KM),
            "q6_k" => Some(Self::Q6K),
            "q8_0" => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// The name [`QuantMix::parse`] accepts for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "q4_0",
            Self::Q4KS => "q4_k_s",
            Self::Q4KM => "q4_k_m",
            Self::Q5KM => "q5_k_m",
            Self::Q6K => "q6_k",
            Self::Q8_0 => "q8_0",
        }
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        use llama_cpp_sys_2 as sys;
        match self {
            Self::Q4_0 => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            Self::Q4KS => sys::LLAMA_FTYPE_MOSTLY_Q4_K_S,
            Self::Q4KM => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
            Self::Q5KM => sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
            Self::Q6K => sys::LLAMA_FTYPE_MOSTLY_Q6_K,
            Self::Q8_0 => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
        }
    }
}

/// Quantizes the F32/F16 GGUF at `input` into `output` with llama.cpp's choice of tensor types
/// for `mix`, on `threads` threads. The llama.cpp backend must be initialised (hold a
/// `LlamaBackend`).
///
/// # Errors
///
/// `InvalidInput` for a path that is not valid UTF-8 C string, `Other` when llama.cpp reports a
/// failure (its log says why).
pub fn quantize_with_llama_cpp(
    input: &Path,
    output: &Path,
    mix: QuantMix,
    threads: usize,
) -> io::Result<()> {
    let c_path = |path: &Path| {
        path.to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a UTF-8 path without NUL", path.display()),
                )
            })
    };
    let (input_c, output_c) = (c_path(input)?, c_path(output)?);
    // SAFETY: the defaults are a plain struct returned by value; both paths are NUL-terminated
    // and outlive the call; the pointer fields stay null (no imatrix, overrides or pruning).
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
        params.ftype = mix.ftype();
        llama_cpp_sys_2::llama_model_quantize(input_c.as_ptr(), output_c.as_ptr(), &params)
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "llama_model_quantize({}) failed with status {status}",
            mix.name()
        )))
    }
}
