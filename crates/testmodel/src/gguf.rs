//! A minimal, generic GGUF v3 writer: typed metadata and F32, F16 and Q4_0 tensors.
//!
//! Layout (GGUF spec, all integers little-endian): header, metadata key/values, tensor infos,
//! zero padding to the alignment, then each tensor's data, each padded to the alignment.
//! Tensor data is streamed through a callback, one tensor at a time, so a file far larger than
//! memory (a 7B shape) is written with constant memory.
//!
//! Shapes are in ggml order: `dims[0]` is the fastest-varying dimension, so a weight applied as
//! `W x` with `x` of length `n_in` and `n_out` outputs has `dims = [n_in, n_out]`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::quant::{quantize_q4_0, Q4_0_BLOCK_BYTES, Q4_0_BLOCK_LEN};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The format version written.
pub const GGUF_VERSION: u32 = 3;
/// The data alignment used unless the metadata sets `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (GGUF spec).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME` is 64 bytes including the terminating NUL.
pub const MAX_TENSOR_NAME_BYTES: usize = 63;

/// `gguf_type` codes of the value kinds this writer emits.
mod kind {
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
}

/// One metadata value. Arrays are homogeneous, as GGUF requires.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL`.
    Bool(bool),
    /// `GGUF_TYPE_STRING` (UTF-8, length-prefixed, no NUL).
    String(String),
    /// Array of strings.
    StringArray(Vec<String>),
    /// Array of f32.
    F32Array(Vec<f32>),
    /// Array of i32.
    I32Array(Vec<i32>),
}

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// 32-bit float (`GGML_TYPE_F32`).
    F32,
    /// IEEE half float (`GGML_TYPE_F16`); values are converted from f32, rounding to nearest even.
    F16,
    /// 4-bit blocks of 32 weights with an f16 scale (`GGML_TYPE_Q4_0`, see [`super::quant`]);
    /// f32 values are quantized as `llama-quantize` does, or blocks are written ready-made.
    Q4_0,
}

impl TensorType {
    /// The `ggml_type` code stored in the tensor info.
    pub fn ggml_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
        }
    }

    /// Elements per block: the unit data is written in, and what `dims[0]` must be a multiple
    /// of (ggml stores rows as whole blocks).
    pub fn block_len(self) -> u64 {
        match self {
            TensorType::F32 | TensorType::F16 => 1,
            TensorType::Q4_0 => Q4_0_BLOCK_LEN as u64,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
            TensorType::Q4_0 => Q4_0_BLOCK_BYTES as u64,
        }
    }
}

/// A tensor's name, shape (ggml order: `dims[0]` varies fastest) and element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape, fastest-varying dimension first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: TensorType,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Size of the data in bytes, before padding.
    pub fn n_bytes(&self) -> u64 {
        self.n_elements() / self.ty.block_len() * self.ty.block_bytes()
    }
}

/// Collects metadata and tensor infos, then writes the file in one pass.
///
/// ```no_run
/// use leafresh_testmodel::gguf::{GgufWriter, TensorType};
/// use std::path::Path;
/// let mut w = GgufWriter::new();
/// w.add_string("general.architecture", "llama");
/// w.add_tensor("output_norm.weight", &[64], TensorType::F32);
/// w.write_file(Path::new("out.gguf"), |_tensor, data| data.write_f32(&[1.0; 64]))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key/value; keys are written in insertion order.
    pub fn add(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a u32 value.
    pub fn add_u32(&mut self, key: impl Into<String>, value: u32) -> &mut Self {
        self.add(key, MetaValue::U32(value))
    }

    /// Adds an i32 value.
    pub fn add_i32(&mut self, key: impl Into<String>, value: i32) -> &mut Self {
        self.add(key, MetaValue::I32(value))
    }

    /// Adds an f32 value.
    pub fn add_f32(&mut self, key: impl Into<String>, value: f32) -> &mut Self {
        self.add(key, MetaValue::F32(value))
    }

    /// Adds a bool value.
    pub fn add_bool(&mut self, key: impl Into<String>, value: bool) -> &mut Self {
        self.add(key, MetaValue::Bool(value))
    }

    /// Adds a string value.
    pub fn add_string(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.add(key, MetaValue::String(value.into()))
    }

    /// Adds an array of strings.
    pub fn add_string_array(&mut self, key: impl Into<String>, values: Vec<String>) -> &mut Self {
        self.add(key, MetaValue::StringArray(values))
    }

    /// Adds an array of f32.
    pub fn add_f32_array(&mut self, key: impl Into<String>, values: Vec<f32>) -> &mut Self {
        self.add(key, MetaValue::F32Array(values))
    }

    /// Adds an array of i32.
    pub fn add_i32_array(&mut self, key: impl Into<String>, values: Vec<i32>) -> &mut Self {
        self.add(key, MetaValue::I32Array(values))
    }

    /// Declares a tensor; its data is supplied, in declaration order, when writing.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: TensorType,
    ) -> &mut Self {
        self.tensors.push(TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        });
        self
    }

    /// The metadata added so far, in order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The tensors declared so far, in order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Writes the whole file to `out` and gives `out` back.
    ///
    /// `fill` is called once per tensor, in declaration order, and must write exactly
    /// `tensor.n_elements()` values through [`TensorData::write_f32`] or
    /// [`TensorData::write_encoded`] (in as many calls as it likes).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a malformed file description (duplicate key or tensor name, bad shape,
    /// name too long, bad alignment) or a `fill` that writes the wrong number of values; any I/O
    /// error of `out`; any error `fill` returns.
    pub fn write<W, F>(&self, out: W, mut fill: F) -> io::Result<W>
    where
        W: Write,
        F: FnMut(&TensorInfo, &mut TensorData<'_>) -> io::Result<()>,
    {
        let alignment = self.validate()?;
        let mut out = Counted {
            inner: out,
            written: 0,
        };

        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&GGUF_VERSION.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_str(&mut out, key)?;
            write_value(&mut out, value)?;
        }

        let mut offset = 0u64;
        for tensor in &self.tensors {
            write_str(&mut out, &tensor.name)?;
            out.write_all(&(tensor.dims.len() as u32).to_le_bytes())?;
            for dim in &tensor.dims {
                out.write_all(&dim.to_le_bytes())?;
            }
            out.write_all(&tensor.ty.ggml_type().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            offset += padded(tensor.n_bytes(), alignment);
        }
        let header_len = out.written;
        write_zeros(&mut out, padded(header_len, alignment) - header_len)?;

        let mut scratch = Vec::new();
        for tensor in &self.tensors {
            let mut data = TensorData {
                out: &mut out,
                ty: tensor.ty,
                remaining: tensor.n_elements(),
                scratch: &mut scratch,
            };
            fill(tensor, &mut data)?;
            if data.remaining != 0 {
                return Err(invalid_input(format!(
                    "tensor {}: {} of {} values were not written",
                    tensor.name,
                    data.remaining,
                    tensor.n_elements()
                )));
            }
            let n_bytes = tensor.n_bytes();
            write_zeros(&mut out, padded(n_bytes, alignment) - n_bytes)?;
        }
        Ok(out.inner)
    }

    /// Writes the file at `path` (buffered) and returns its size in bytes. A file left half
    /// written by an error is removed, so a failed run never leaves a loadable-looking file.
    ///
    /// # Errors
    ///
    /// As [`GgufWriter::write`], plus errors creating the file.
    pub fn write_file<F>(&self, path: &Path, fill: F) -> io::Result<u64>
    where
        F: FnMut(&TensorInfo, &mut TensorData<'_>) -> io::Result<()>,
    {
        let result = File::create(path).and_then(|file| {
            let writer = self.write(BufWriter::with_capacity(1 << 20, file), fill)?;
            let file = writer
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?;
            Ok(file.metadata()?.len())
        });
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    /// Checks everything llama.cpp's loader would reject, and returns the alignment to use.
    fn validate(&self) -> io::Result<u64> {
        let mut keys = HashSet::new();
        for (key, _) in &self.metadata {
            if key.is_empty() || !keys.insert(key.as_str()) {
                return Err(invalid_input(format!(
                    "metadata key {key:?} is empty or repeated"
                )));
            }
        }
        let alignment = match self.metadata.iter().find(|(key, _)| key == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetaValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, value)) => {
                return Err(invalid_input(format!(
                    "{ALIGNMENT_KEY} must be a power-of-two u32, got {value:?}"
                )))
            }
        };
        let mut names = HashSet::new();
        for tensor in &self.tensors {
            let name = tensor.name.as_str();
            if name.is_empty() || name.len() > MAX_TENSOR_NAME_BYTES || !names.insert(name) {
                return Err(invalid_input(format!(
                    "tensor name {name:?} is empty, longer than {MAX_TENSOR_NAME_BYTES} bytes, or repeated"
                )));
            }
            if tensor.dims.is_empty() || tensor.dims.len() > MAX_DIMS || tensor.dims.contains(&0) {
                return Err(invalid_input(format!(
                    "tensor {name}: shape {:?} must have 1 to {MAX_DIMS} non-zero dimensions",
                    tensor.dims
                )));
            }
            if !tensor.dims[0].is_multiple_of(tensor.ty.block_len()) {
                return Err(invalid_input(format!(
                    "tensor {name}: {:?} rows of {} elements are not whole blocks of {}",
                    tensor.ty,
                    tensor.dims[0],
                    tensor.ty.block_len()
                )));
            }
        }
        Ok(alignment)
    }
}

/// Where `fill` writes one tensor's values; converts them to the tensor's element type.
pub struct TensorData<'a> {
    out: &'a mut dyn Write,
    ty: TensorType,
    remaining: u64,
    scratch: &'a mut Vec<u8>,
}

impl TensorData<'_> {
    /// Appends `values` to the tensor, in ggml order (`dims[0]` fastest), converted to its type.
    /// For a block type (Q4_0) each call must bring whole blocks.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if this would exceed the tensor's element count or splits a block; I/O
    /// errors of the output.
    pub fn write_f32(&mut self, values: &[f32]) -> io::Result<()> {
        self.reserve(values.len() as u64)?;
        self.scratch.clear();
        match self.ty {
            TensorType::F32 => {
                for value in values {
                    self.scratch.extend_from_slice(&value.to_le_bytes());
                }
            }
            TensorType::F16 => {
                for value in values {
                    self.scratch
                        .extend_from_slice(&f32_to_f16_bits(*value).to_le_bytes());
                }
            }
            TensorType::Q4_0 => quantize_q4_0(values, self.scratch),
        }
        self.out.write_all(self.scratch)?;
        self.remaining -= values.len() as u64;
        Ok(())
    }

    /// Appends data already in the tensor's encoding: whole blocks of
    /// [`TensorType::block_bytes`] (little-endian floats for F32 and F16). This is how large
    /// quantized tensors are filled fast, without an f32 detour.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `bytes` is not whole blocks or holds more elements than remain; I/O
    /// errors of the output.
    pub fn write_encoded(&mut self, bytes: &[u8]) -> io::Result<()> {
        let block_bytes = self.ty.block_bytes();
        if !(bytes.len() as u64).is_multiple_of(block_bytes) {
            return Err(invalid_input(format!(
                "{} bytes are not whole {:?} blocks of {block_bytes} bytes",
                bytes.len(),
                self.ty
            )));
        }
        let n = bytes.len() as u64 / block_bytes * self.ty.block_len();
        self.reserve(n)?;
        self.out.write_all(bytes)?;
        self.remaining -= n;
        Ok(())
    }

    /// How many values the tensor still needs.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Checks that `n` more elements fit and are whole blocks.
    fn reserve(&self, n: u64) -> io::Result<()> {
        if n > self.remaining {
            return Err(invalid_input(format!(
                "{n} values written where only {} remain in the tensor",
                self.remaining
            )));
        }
        if !n.is_multiple_of(self.ty.block_len()) {
            return Err(invalid_input(format!(
                "{n} values are not whole {:?} blocks of {}",
                self.ty,
                self.ty.block_len()
            )));
        }
        Ok(())
    }
}

/// IEEE 754 binary16 bits of `value`, rounding to nearest even; overflow becomes infinity.
pub fn f32_to_f16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x007f_ffff;

    if exponent == 0xff {
        // Infinity stays infinity; NaN keeps its top payload bits and stays a (quiet) NaN.
        let nan = if mantissa != 0 { 0x0200 } else { 0 };
        return sign | 0x7c00 | nan | (mantissa >> 13) as u16;
    }
    let half_exponent = exponent - 127 + 15;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    if half_exponent <= 0 {
        if half_exponent < -10 {
            // Below half the smallest subnormal: rounds to (signed) zero.
            return sign;
        }
        // Subnormal: shift the full 24-bit significand into 10 bits, rounding to nearest even.
        let significand = mantissa | 0x0080_0000;
        let shift = (14 - half_exponent) as u32;
        let half = 1u32 << (shift - 1);
        let rounded = significand + half - 1 + ((significand >> shift) & 1);
        return sign | (rounded >> shift) as u16;
    }
    let mut half = ((half_exponent as u32) << 10) | (mantissa >> 13);
    let rest = mantissa & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        // A carry out of the mantissa correctly bumps the exponent (up to infinity).
        half += 1;
    }
    sign | half as u16
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn padded(len: u64, alignment: u64) -> u64 {
    len.div_ceil(alignment) * alignment
}

fn write_zeros(out: &mut impl Write, n: u64) -> io::Result<()> {
    use std::io::Read;
    io::copy(&mut io::repeat(0).take(n), out).map(drop)
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value(out: &mut impl Write, value: &MetaValue) -> io::Result<()> {
    match value {
        MetaValue::U32(v) => {
            out.write_all(&kind::U32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        MetaValue::I32(v) => {
            out.write_all(&kind::I32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        MetaValue::F32(v) => {
            out.write_all(&kind::F32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        MetaValue::Bool(v) => {
            out.write_all(&kind::BOOL.to_le_bytes())?;
            out.write_all(&[u8::from(*v)])
        }
        MetaValue::String(s) => {
            out.write_all(&kind::STRING.to_le_bytes())?;
            write_str(out, s)
        }
        MetaValue::StringArray(items) => {
            write_array_header(out, kind::STRING, items.len())?;
            items.iter().try_for_each(|s| write_str(out, s))
        }
        MetaValue::F32Array(items) => {
            write_array_header(out, kind::F32, items.len())?;
            items
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
        MetaValue::I32Array(items) => {
            write_array_header(out, kind::I32, items.len())?;
            items
                .iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
    }
}

fn write_array_header(out: &mut impl Write, element_kind: u32, len: usize) -> io::Result<()> {
    out.write_all(&kind::ARRAY.to_le_bytes())?;
    out.write_all(&element_kind.to_le_bytes())?;
    out.write_all(&(len as u64).to_le_bytes())
}

/// Counts bytes so the header can be padded to the alignment without seeking.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Just enough of a GGUF reader to check what the writer produced.
    struct Parsed {
        version: u32,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<(String, Vec<u64>, u32, u64)>,
        data_start: usize,
    }

    struct Cursor<'a>(&'a [u8], usize);

    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let bytes = &self.0[self.1..self.1 + n];
            self.1 += n;
            bytes
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let n = self.u64() as usize;
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn f32(&mut self) -> f32 {
            f32::from_bits(self.u32())
        }
        fn value(&mut self, kind: u32) -> MetaValue {
            match kind {
                kind::U32 => MetaValue::U32(self.u32()),
                kind::I32 => MetaValue::I32(self.u32() as i32),
                kind::F32 => MetaValue::F32(self.f32()),
                kind::BOOL => MetaValue::Bool(self.take(1)[0] != 0),
                kind::STRING => MetaValue::String(self.string()),
                kind::ARRAY => {
                    let element = self.u32();
                    let n = self.u64() as usize;
                    match element {
                        kind::STRING => {
                            MetaValue::StringArray((0..n).map(|_| self.string()).collect())
                        }
                        kind::F32 => MetaValue::F32Array((0..n).map(|_| self.f32()).collect()),
                        kind::I32 => {
                            MetaValue::I32Array((0..n).map(|_| self.u32() as i32).collect())
                        }
                        other => panic!("unexpected array kind {other}"),
                    }
                }
                other => panic!("unexpected kind {other}"),
            }
        }
    }

    fn parse(bytes: &[u8]) -> Parsed {
        let mut c = Cursor(bytes, 0);
        assert_eq!(c.take(4), b"GGUF");
        let version = c.u32();
        let n_tensors = c.u64();
        let n_kv = c.u64();
        let metadata = (0..n_kv)
            .map(|_| {
                let key = c.string();
                let kind = c.u32();
                (key, c.value(kind))
            })
            .collect();
        let tensors = (0..n_tensors)
            .map(|_| {
                let name = c.string();
                let n_dims = c.u32();
                let dims = (0..n_dims).map(|_| c.u64()).collect();
                let ty = c.u32();
                (name, dims, ty, c.u64())
            })
            .collect();
        let data_start = c.1.div_ceil(32) * 32;
        assert!(bytes[c.1..data_start].iter().all(|b| *b == 0));
        Parsed {
            version,
            metadata,
            tensors,
            data_start,
        }
    }

    fn sample_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_u32("a.u32", 7)
            .add_i32("a.i32", -3)
            .add_f32("a.f32", 1e-5)
            .add_bool("a.bool", true)
            .add_string_array("a.strings", vec!["▁".into(), "<0x0A>".into(), "사".into()])
            .add_f32_array("a.f32s", vec![0.0, -1.5])
            .add_i32_array("a.i32s", vec![1, 6, 3])
            .add_tensor("t.f32", &[3, 2], TensorType::F32)
            .add_tensor("t.f16", &[5], TensorType::F16);
        w
    }

    #[test]
    fn round_trips_metadata_and_aligns_tensor_data() {
        let w = sample_writer();
        let bytes = w
            .write(Vec::new(), |tensor, data| {
                let values: Vec<f32> = (0..tensor.n_elements()).map(|i| i as f32).collect();
                // Two calls, to check a tensor may be streamed in pieces.
                let (a, b) = values.split_at(1);
                data.write_f32(a)?;
                data.write_f32(b)
            })
            .unwrap();
        let parsed = parse(&bytes);
        assert_eq!(parsed.version, 3);
        assert_eq!(parsed.metadata, w.metadata());
        assert_eq!(
            parsed.tensors,
            vec![
                ("t.f32".to_string(), vec![3, 2], 0, 0),
                // 24 bytes of f32 padded to 32.
                ("t.f16".to_string(), vec![5], 1, 32),
            ]
        );
        let f32_data = &bytes[parsed.data_start..parsed.data_start + 24];
        let floats: Vec<f32> = f32_data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let f16_data = &bytes[parsed.data_start + 32..parsed.data_start + 42];
        assert_eq!(&f16_data[2..4], &0x3c00u16.to_le_bytes()); // 1.0
        assert_eq!(bytes.len(), parsed.data_start + 64);
    }

    #[test]
    fn rejects_wrong_value_counts_and_malformed_descriptions() {
        let too_few = sample_writer().write(Vec::new(), |_, data| data.write_f32(&[1.0]));
        assert_eq!(too_few.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let too_many = sample_writer().write(Vec::new(), |_, data| data.write_f32(&[0.0; 7]));
        assert_eq!(too_many.unwrap_err().kind(), io::ErrorKind::InvalidInput);

        let mut repeated_key = sample_writer();
        repeated_key.add_u32("a.u32", 8);
        let mut repeated_tensor = sample_writer();
        repeated_tensor.add_tensor("t.f16", &[1], TensorType::F32);
        let mut zero_dim = GgufWriter::new();
        zero_dim.add_tensor("z", &[4, 0], TensorType::F32);
        let mut long_name = GgufWriter::new();
        long_name.add_tensor("x".repeat(64), &[1], TensorType::F32);
        let mut bad_alignment = GgufWriter::new();
        bad_alignment.add_u32(ALIGNMENT_KEY, 24);
        for w in [
            repeated_key,
            repeated_tensor,
            zero_dim,
            long_name,
            bad_alignment,
        ] {
            let err = w.write(Vec::new(), |t, d| {
                d.write_f32(&vec![0.0; t.n_elements() as usize])
            });
            assert_eq!(
                err.unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{w:?}"
            );
        }
    }

    #[test]
    fn q4_0_tensors_are_whole_blocks_from_f32_or_ready_made() {
        use crate::quant::dequantize_q4_0;

        let mut w = GgufWriter::new();
        w.add_tensor("q.a", &[64, 3], TensorType::Q4_0)
            .add_tensor("q.b", &[32], TensorType::Q4_0)
            .add_tensor("f", &[1], TensorType::F32);
        assert_eq!(w.tensors()[0].n_bytes(), 6 * 18);
        let block_b: Vec<u8> = 0x3c00u16
            .to_le_bytes()
            .into_iter()
            .chain([0x9f; 16])
            .collect();
        let bytes = w
            .write(Vec::new(), |tensor, data| match tensor.name.as_str() {
                "q.a" => data.write_f32(&[0.5; 192]),
                "q.b" => data.write_encoded(&block_b),
                _ => data.write_encoded(&2.0f32.to_le_bytes()),
            })
            .unwrap();
        let parsed = parse(&bytes);
        let types: Vec<(u32, u64)> = parsed.tensors.iter().map(|t| (t.2, t.3)).collect();
        // 108 bytes padded to 128, 18 padded to 32.
        assert_eq!(types, [(2, 0), (2, 128), (0, 160)]);
        let data = &bytes[parsed.data_start..];
        assert_eq!(dequantize_q4_0(&data[..18]), [0.5; 32]);
        // d = 1.0, low nibble 15 (+7), high nibble 9 (+1).
        let b = dequantize_q4_0(&data[128..146]);
        assert_eq!((b[0], b[16]), (7.0, 1.0));
        assert_eq!(data[160..164], 2.0f32.to_le_bytes());
    }

    #[test]
    fn q4_0_rejects_partial_blocks() {
        let mut odd_row = GgufWriter::new();
        odd_row.add_tensor("q", &[48, 2], TensorType::Q4_0);
        let err = odd_row.write(Vec::new(), |_, d| d.write_f32(&[0.0; 96]));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidInput);

        let mut w = GgufWriter::new();
        w.add_tensor("q", &[64], TensorType::Q4_0);
        let split = w.write(Vec::new(), |_, d| {
            d.write_f32(&[0.0; 16])?;
            d.write_f32(&[0.0; 48])
        });
        assert_eq!(split.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let ragged = w.write(Vec::new(), |_, d| d.write_encoded(&[0; 35]));
        assert_eq!(ragged.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn f16_conversion_rounds_to_nearest_even() {
        let cases = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // halfway to the next step rounds up to infinity
            (f32::INFINITY, 0x7c00),
            (2f32.powi(-24), 0x0001),          // smallest subnormal
            (2f32.powi(-25), 0x0000),          // exactly half of it: ties to even (zero)
            (1023.0 * 2f32.powi(-24), 0x03ff), // largest subnormal
            (1.0 + 1.0 / 2048.0, 0x3c00),      // tie between 1.0 and the next: even wins
        ];
        for (value, bits) in cases {
            assert_eq!(f32_to_f16_bits(value), bits, "{value}");
        }
        let nan = f32_to_f16_bits(f32::NAN);
        assert!(nan & 0x7c00 == 0x7c00 && nan & 0x03ff != 0);
    }
}
