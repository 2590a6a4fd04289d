//! Integration tests: the real llama.cpp engine on tiny GGUF files the project generates, and the
//! real service binary on a free loopback port.

mod app;
mod browser;
mod chat_formats;
mod clients;
mod deploy_nginx;
mod deploy_systemd;
mod deploy_tools;
mod engine;
mod families;
mod fast_forward;
mod faults;
mod fuzz_corpus;
mod gpu_check;
mod hardening;
mod model_file;
mod openai;
mod openai_sdk;
mod ops;
mod prompt_cache;
mod protocols;
mod real_weights;
mod recommend;
mod scheduler;
mod speculation;
mod startup;
mod support;
mod upstream;
mod upstream_llama_server;
