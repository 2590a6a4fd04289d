//! Helpers for the unit tests in this crate (compiled only under `cfg(test)`). The fuzz checks
//! themselves are in `crates/fuzz-checks`, which depends on this crate and so cannot serve its
//! unit tests.

/// A saved fuzz finding, `fuzz/regressions/TARGET/NAME`, for the regression test named after it.
pub(crate) fn regression_input(target: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) use crate::engine::llama::guidance::lark_accepts;
