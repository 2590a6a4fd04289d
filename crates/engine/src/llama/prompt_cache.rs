//! The prompt cache on disk (`--prompt-cache-dir`): the KV cells of the shared prompt prefix,
//! saved once and loaded at the next start instead of being computed again.
//!
//! A file is named by a key over everything that decides its cells: the model file's identity
//! (path, size, modification time), the prefix's tokens (so the instruction text and the
//! vocabulary), the settings that shape the cells (context, cache types, flash attention) and
//! the llama.cpp version. A file under any other key is never loaded; a missing, stale, truncated
//! or corrupt one is ignored with one log line, and the prefix is computed and saved again.
//!
//! llama.cpp aborts the process on a truncated state file (`GGML_ASSERT`), so it never sees one
//! that was not checked: beside each file, a seal (`.sum`) holds its length and checksum, written
//! after the file itself. Both are written to a temporary name and renamed, so a crash leaves
//! either no seal or one that does not match, and the file is computed again.

use std::path::{Path, PathBuf};

use llama_cpp_2::token::LlamaToken;

use super::model::ModelInfo;
use super::scheduler::EngineSettings;

/// The llama.cpp this binary links: its state files are only read back by the same one. The
/// version is the one `Cargo.lock` pins (a test fails when they differ).
const LLAMA_CPP: &str = "llama-cpp-sys-2 0.1.161";

/// Where prefixes are kept, and the part of their key that does not depend on the prefix.
#[derive(Debug, Clone)]
pub struct PromptCache {
    dir: PathBuf,
    identity: u64,
}

impl PromptCache {
    pub fn new(dir: PathBuf, model: &ModelInfo, settings: &EngineSettings) -> Self {
        let modified = std::fs::metadata(&model.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let identity = format!(
            "{LLAMA_CPP}|{}|{}|{modified}|ctx={}|k={:?}|v={:?}|fa={:?}",
            model.path.display(),
            model.file_size,
            settings.ctx_size,
            settings.cache_type_k,
            settings.cache_type_v,
            settings.flash_attention,
        );
        Self {
            dir,
            identity: fnv1a(identity.as_bytes()),
        }
    }

    /// The file for a prefix of these tokens.
    pub fn path_for(&self, tokens: &[LlamaToken]) -> PathBuf {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.0.to_le_bytes()).collect();
        self.dir.join(format!(
            "prefix-{:016x}-{:016x}.kv",
            self.identity,
            fnv1a(&bytes)
        ))
    }

    /// Where to write `path` before renaming it into place.
    pub fn temporary(path: &Path) -> PathBuf {
        path.with_extension(format!("kv.tmp-{}", std::process::id()))
    }

    /// Makes the directory; removes the prefix files of other keys (a model or setting that
    /// changed), so that the directory does not grow with every change.
    pub fn prepare(&self, keep: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let seal = seal_path(keep);
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("prefix-") && path != keep && path != seal {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

/// Writes the seal of `path`: its length and checksum, after the file itself is in place.
pub fn seal(path: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    let seal = seal_path(path);
    let temporary = PromptCache::temporary(&seal);
    std::fs::write(
        &temporary,
        format!("{} {:016x}\n", bytes.len(), fnv1a(&bytes)),
    )?;
    std::fs::rename(&temporary, &seal)
}

/// Whether `path` is whole and unchanged since it was sealed; why not, if not.
pub fn check_seal(path: &Path) -> Result<(), String> {
    let seal = std::fs::read_to_string(seal_path(path)).map_err(|_| "it has no seal")?;
    let bytes = std::fs::read(path).map_err(|e| format!("it cannot be read: {e}"))?;
    let expected = format!("{} {:016x}", bytes.len(), fnv1a(&bytes));
    if seal.trim() == expected {
        Ok(())
    } else {
        Err("it is truncated or changed since it was written".into())
    }
}

fn seal_path(path: &Path) -> PathBuf {
    path.with_extension("sum")
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (the standard hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_the_llama_cpp_that_cargo_lock_pins() {
        let lock = include_str!("../../../../Cargo.lock");
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"llama-cpp-sys-2\"\n"))
            .and_then(|p| p.split("version = \"").nth(1))
            .and_then(|v| v.split('"').next())
            .expect("Cargo.lock pins llama-cpp-sys-2");
        assert_eq!(LLAMA_CPP, format!("llama-cpp-sys-2 {version}"));
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_truncated_or_changed_or_unsealed_file_fails_its_seal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefix-1-2.kv");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert!(check_seal(&path).is_err(), "no seal yet");
        seal(&path).unwrap();
        check_seal(&path).unwrap();
        std::fs::write(&path, vec![7u8; 4000]).unwrap();
        assert!(check_seal(&path).is_err(), "truncated");
        let mut changed = vec![7u8; 4096];
        changed[100] = 8;
        std::fs::write(&path, changed).unwrap();
        assert!(check_seal(&path).is_err(), "changed");
    }

    #[test]
    fn another_prefix_gets_another_file_and_a_temporary_name_beside_it() {
        let cache = PromptCache {
            dir: PathBuf::from("/cache"),
            identity: 7,
        };
        let a = cache.path_for(&[LlamaToken::new(1), LlamaToken::new(2)]);
        let b = cache.path_for(&[LlamaToken::new(1), LlamaToken::new(3)]);
        assert_ne!(a, b);
        assert!(a.starts_with("/cache"));
        let tmp = PromptCache::temporary(&a);
        assert_eq!(tmp.parent(), a.parent());
        assert_ne!(tmp, a);
    }
}
