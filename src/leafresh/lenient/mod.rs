//! What `--no-grammar` needs and the default path does not: reading unconstrained model output.
//!
//! With the answer grammar on (the default) the model writes exactly the answer's JSON, so
//! `extract` only follows JSON strings and keys and `answer` is `serde_json` plus validation.
//! Without the grammar a model writes prose around the JSON, code fences, single quotes,
//! unquoted keys, `title: description` lines. Handling that is most of the code, and none of it
//! should be in the way of reading the default path, so it lives here:
//! - `extract`: the extractor's prose, line-head and bare-token modes, string escapes, and the
//!   final `cleanse` regex pass;
//! - `answer`: the repairs tried when the final text is not JSON, and the line format.
//!
//! Nothing outside `leafresh` uses this module directly; `cleanse` is re-exported from
//! `leafresh::extract`.

pub(super) mod answer;
pub(super) mod extract;
