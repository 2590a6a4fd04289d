//! Builds the start-up check of the host's CPU (`src/host_cpu.c`) into the binary: the features
//! this build enabled, by their names in rustc and in the kernel's `/proc/cpuinfo`, are compared
//! with the host's before anything else runs.

/// The x86-64 features a `-C target-cpu` can enable that code may use: rustc's name, the
/// kernel's. llama.cpp gets the same `-march`, so these cover its code too (its AMX kernels are
/// not built: `.cargo/config.toml`).
const X86_FEATURES: &[(&str, &str)] = &[
    ("sse3", "pni"),
    ("ssse3", "ssse3"),
    ("sse4.1", "sse4_1"),
    ("sse4.2", "sse4_2"),
    ("popcnt", "popcnt"),
    ("avx", "avx"),
    ("avx2", "avx2"),
    ("fma", "fma"),
    ("f16c", "f16c"),
    ("bmi1", "bmi1"),
    ("bmi2", "bmi2"),
    ("lzcnt", "abm"),
    ("movbe", "movbe"),
    ("avx512f", "avx512f"),
    ("avx512cd", "avx512cd"),
    ("avx512bw", "avx512bw"),
    ("avx512dq", "avx512dq"),
    ("avx512vl", "avx512vl"),
    ("avx512vnni", "avx512_vnni"),
    ("avx512bf16", "avx512_bf16"),
    ("avx512vbmi", "avx512vbmi"),
    ("avx512vbmi2", "avx512_vbmi2"),
    ("avx512bitalg", "avx512_bitalg"),
    ("avx512vpopcntdq", "avx512_vpopcntdq"),
    ("avx512ifma", "avx512ifma"),
    ("avx512fp16", "avx512_fp16"),
    ("avxvnni", "avx_vnni"),
    ("gfni", "gfni"),
    ("vaes", "vaes"),
    ("vpclmulqdq", "vpclmulqdq"),
];

fn main() {
    println!("cargo:rerun-if-changed=src/host_cpu.c");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_ARCH") != "x86_64" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let enabled = var("CARGO_CFG_TARGET_FEATURE");
    let built: Vec<String> = X86_FEATURES
        .iter()
        .filter(|(rust, _)| enabled.split(',').any(|f| f == *rust))
        .map(|(rust, kernel)| format!("{rust}:{kernel}"))
        .collect();
    let objects = cc::Build::new()
        .file("src/host_cpu.c")
        .define(
            "LEAFRESH_BUILT_FEATURES",
            format!("\"{}\"", built.join(" ")).as_str(),
        )
        // The check must run on any x86-64 CPU, to tell what is missing: the baseline, whatever
        // the rest of the build targets (the last -march wins).
        .flag("-march=x86-64")
        .flag("-mtune=generic")
        .compile_intermediates();
    // An object on the command line is always linked (an archive member nothing refers to is
    // not), and its .preinit_array entry with it.
    for object in objects {
        println!("cargo:rustc-link-arg-bins={}", object.display());
    }
}
