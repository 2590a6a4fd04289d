//! Request accounting: the Prometheus metrics `/metrics` shows, and the one log line each request
//! ends with. The engine knows nothing of this; it reports counts in each request's summary and
//! its load through `EngineStats`, read at scrape time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::engine::{EngineStats, GenerationSummary};

/// How a request ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered completely.
    Ok,
    /// Refused by validation or the topic filter (the client's mistake or an off-topic message).
    Rejected,
    /// Refused because every slot and the queue were busy, or the server was stopping.
    Unavailable,
    /// The client left before the end.
    Cancelled,
    /// Failed on the server side.
    Error,
}

impl Outcome {
    /// How a request that ended with an error of HTTP `status` is counted (both APIs).
    pub fn of_error_status(status: u16) -> Outcome {
        match status {
            503 => Outcome::Unavailable,
            500..=599 => Outcome::Error,
            _ => Outcome::Rejected,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
        }
    }
}

/// Every metric of the service, registered in its own registry.
pub struct Metrics {
    /// The engine's name (`llama.cpp` or `upstream`), on every `request finished` line.
    engine: &'static str,
    next_request_id: AtomicU64,
    /// Requests begun and not finished: from before the stop check to their final event, so
    /// that a stop waits for those still being prepared or fitted as well as those generating.
    in_flight: AtomicUsize,
    registry: Registry,
    requests_active: IntGauge,
    requests_queued: IntGauge,
    requests_total: IntCounterVec,
    prompt_tokens_total: IntCounter,
    prompt_tokens_cached_total: IntCounter,
    generated_tokens_total: IntCounter,
    drafted_tokens_total: IntCounter,
    accepted_tokens_total: IntCounter,
    time_to_first_token: Histogram,
    queue_wait: Histogram,
    engine_errors_total: IntCounter,
    upstream_latency: Histogram,
    decode_steps_total: IntCounter,
    decode_seconds_total: Counter,
    step_host_seconds_total: Counter,
}

/// Latency buckets in seconds: from a cached prompt on a GPU to a cold 7B prefill on 2 cores.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new(engine: &'static str) -> Self {
        let registry = Registry::new();
        let requests_active = IntGauge::new(
            "leafresh_requests_active",
            "Requests being generated (holding a slot)",
        )
        .expect("valid metric");
        let requests_queued = IntGauge::new(
            "leafresh_requests_queued",
            "Requests waiting for a free slot",
        )
        .expect("valid metric");
        let requests_total = IntCounterVec::new(
            Opts::new(
                "leafresh_requests_total",
                "Requests by endpoint and outcome",
            ),
            &["endpoint", "outcome"],
        )
        .expect("valid metric");
        let prompt_tokens_total = IntCounter::new(
            "leafresh_prompt_tokens_total",
            "Prompt tokens of finished requests",
        )
        .expect("valid metric");
        let prompt_tokens_cached_total = IntCounter::new(
            "leafresh_prompt_tokens_cached_total",
            "Prompt tokens whose KV cells came from the prompt cache",
        )
        .expect("valid metric");
        let generated_tokens_total =
            IntCounter::new("leafresh_generated_tokens_total", "Tokens generated")
                .expect("valid metric");
        let drafted_tokens_total = IntCounter::new(
            "leafresh_drafted_tokens_total",
            "Tokens drafted by self-speculation and checked",
        )
        .expect("valid metric");
        let accepted_tokens_total = IntCounter::new(
            "leafresh_accepted_tokens_total",
            "Drafted tokens the sampler chose (each without a decode step of its own)",
        )
        .expect("valid metric");
        let time_to_first_token = Histogram::with_opts(
            HistogramOpts::new(
                "leafresh_time_to_first_token_seconds",
                "From submission to the first generated token (queue and prompt included)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "leafresh_queue_wait_seconds",
                "Time spent waiting for a slot",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let engine_errors_total = IntCounter::new(
            "leafresh_engine_errors_total",
            "Requests the engine failed (decode failures; upstream refused, broken or garbled)",
        )
        .expect("valid metric");
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "leafresh_upstream_latency_seconds",
                "Upstream mode: from sending a request upstream to its response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let decode_steps_total = IntCounter::new(
            "leafresh_decode_steps_total",
            "Decode steps of the embedded engine",
        )
        .expect("valid metric");
        let decode_seconds_total = Counter::new(
            "leafresh_decode_seconds_total",
            "Time of those steps inside llama_decode",
        )
        .expect("valid metric");
        let step_host_seconds_total = Counter::new(
            "leafresh_step_host_seconds_total",
            "Time of those steps on the host around llama_decode (batch, sampling, constraints, \
             streaming), while the hardware waits",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decode_steps_total.clone()),
            Box::new(decode_seconds_total.clone()),
            Box::new(step_host_seconds_total.clone()),
            Box::new(requests_queued.clone()),
            Box::new(requests_total.clone()),
            Box::new(prompt_tokens_total.clone()),
            Box::new(prompt_tokens_cached_total.clone()),
            Box::new(generated_tokens_total.clone()),
            Box::new(drafted_tokens_total.clone()),
            Box::new(accepted_tokens_total.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(queue_wait.clone()),
            Box::new(engine_errors_total.clone()),
            Box::new(upstream_latency.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            engine,
            next_request_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            registry,
            requests_active,
            requests_queued,
            requests_total,
            prompt_tokens_total,
            prompt_tokens_cached_total,
            generated_tokens_total,
            drafted_tokens_total,
            accepted_tokens_total,
            time_to_first_token,
            queue_wait,
            engine_errors_total,
            upstream_latency,
            decode_steps_total,
            decode_seconds_total,
            step_host_seconds_total,
        }
    }

    /// Starts the record of one request of `endpoint`; finish it when the request ends.
    pub fn begin(self: &Arc<Self>, endpoint: &'static str) -> RequestRecord {
        // SeqCst, as the stop flag: a request either sees the stop, or the stop sees it.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestRecord {
            in_flight: InFlight(Arc::clone(self)),
            metrics: Arc::clone(self),
            id: self.next_request_id.fetch_add(1, Ordering::Relaxed),
            endpoint,
            started: Instant::now(),
            messages_dropped: 0,
            tools_dropped: 0,
        }
    }

    /// Requests begun and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts one request of `endpoint` by how it ended.
    fn request(&self, endpoint: &str, outcome: Outcome) {
        self.requests_total
            .with_label_values(&[endpoint, outcome.as_str()])
            .inc();
    }

    /// Records the token counts and latencies of a finished generation.
    fn generation(&self, summary: &GenerationSummary) {
        self.prompt_tokens_total
            .inc_by(summary.prompt_tokens as u64);
        self.prompt_tokens_cached_total
            .inc_by(summary.cached_tokens as u64);
        self.generated_tokens_total
            .inc_by(summary.completion_tokens as u64);
        self.drafted_tokens_total
            .inc_by(summary.drafted_tokens as u64);
        self.accepted_tokens_total
            .inc_by(summary.accepted_tokens as u64);
        self.time_to_first_token
            .observe(summary.time_to_first_token.as_secs_f64());
        self.queue_wait.observe(summary.queue_wait.as_secs_f64());
        if let Some(latency) = summary.upstream_latency {
            self.upstream_latency.observe(latency.as_secs_f64());
        }
    }

    /// The Prometheus text exposition, with the engine's current load.
    pub fn render(&self, stats: EngineStats) -> String {
        self.requests_active.set(stats.active as i64);
        self.requests_queued.set(stats.queued as i64);
        // The engine counts; the counter follows it.
        let seen = self.engine_errors_total.get();
        self.engine_errors_total
            .inc_by(stats.errors.saturating_sub(seen));
        let seen = self.decode_steps_total.get();
        self.decode_steps_total
            .inc_by(stats.steps.steps.saturating_sub(seen));
        for (counter, total) in [
            (&self.decode_seconds_total, stats.steps.decode),
            (&self.step_host_seconds_total, stats.steps.host),
        ] {
            counter.inc_by((total.as_secs_f64() - counter.get()).max(0.0));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// One request, from its start to the line it ends with.
pub struct RequestRecord {
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    id: u64,
    endpoint: &'static str,
    started: Instant,
    /// Messages of a `/v1` conversation left out to fit the context.
    messages_dropped: usize,
    /// Tool definitions of a `/v1` request left out to fit the context.
    tools_dropped: usize,
}

/// A request counted as in flight until this is dropped: after its last byte is handed to the
/// server ([`RequestRecord::finish`] gives it back for a stream's final events).
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RequestRecord {
    /// Notes that the conversation was trimmed to fit (said on the log line when not zero).
    pub fn messages_dropped(&mut self, count: usize) {
        self.messages_dropped = count;
    }

    /// Notes that the offered tools were left out to fit (said on the log line when not zero).
    pub fn tools_dropped(&mut self, count: usize) {
        self.tools_dropped = count;
    }

    /// Counts the request and writes its one log line: id, endpoint, outcome, and for a finished
    /// generation the queue wait, prompt tokens (cached), time to first token, generated tokens,
    /// tokens/s and finish reason. No request value is logged, so nothing a client sends can
    /// forge a log line. The request stays in flight while what this returns is held: a stream
    /// holds it until its final events are sent, so that a stop does not cut them.
    pub fn finish(self, outcome: Outcome, summary: Option<&GenerationSummary>) -> InFlight {
        self.metrics.request(self.endpoint, outcome);
        let total_ms = self.started.elapsed().as_millis() as u64;
        match summary {
            Some(summary) => {
                self.metrics.generation(summary);
                tracing::info!(
                    id = self.id,
                    endpoint = self.endpoint,
                    engine = self.metrics.engine,
                    outcome = outcome.as_str(),
                    upstream_ms = summary.upstream_latency.map(|d| d.as_millis() as u64),
                    messages_dropped = (self.messages_dropped > 0).then_some(self.messages_dropped),
                    tools_dropped = (self.tools_dropped > 0).then_some(self.tools_dropped),
                    queue_ms = summary.queue_wait.as_millis() as u64,
                    prompt_tokens = summary.prompt_tokens,
                    cached_tokens = summary.cached_tokens,
                    ttft_ms = summary.time_to_first_token.as_millis() as u64,
                    completion_tokens = summary.completion_tokens,
                    forced_tokens = summary.forced_tokens,
                    drafted_tokens = summary.drafted_tokens,
                    accepted_tokens = summary.accepted_tokens,
                    tokens_per_second = format_args!("{:.1}", summary.decode_tokens_per_second()),
                    finish = summary.finish_reason.as_str(),
                    total_ms,
                    "request finished"
                );
            }
            None => tracing::info!(
                id = self.id,
                endpoint = self.endpoint,
                engine = self.metrics.engine,
                outcome = outcome.as_str(),
                total_ms,
                "request finished"
            ),
        }
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FinishReason;
    use std::time::Duration;

    #[test]
    fn render_shows_every_metric_with_its_values() {
        let metrics = Arc::new(Metrics::new("llama.cpp"));
        let summary = GenerationSummary {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 400,
            cached_tokens: 350,
            completion_tokens: 120,
            forced_tokens: 30,
            drafted_tokens: 0,
            accepted_tokens: 0,
            queue_wait: Duration::from_millis(5),
            time_to_first_token: Duration::from_millis(300),
            total_time: Duration::from_secs(3),
            upstream_latency: Some(Duration::from_millis(20)),
            stop_sequence: None,
        };
        metrics
            .begin("base-info")
            .finish(Outcome::Ok, Some(&summary));
        let text = metrics.render(EngineStats {
            active: 2,
            queued: 1,
            alive: true,
            engine: "llama.cpp",
            errors: 3,
            steps: crate::engine::StepTimes {
                steps: 10,
                decode: Duration::from_millis(200),
                host: Duration::from_millis(30),
            },
        });
        for line in [
            "leafresh_requests_active 2",
            "leafresh_requests_queued 1",
            "leafresh_requests_total{endpoint=\"base-info\",outcome=\"ok\"} 1",
            "leafresh_prompt_tokens_total 400",
            "leafresh_prompt_tokens_cached_total 350",
            "leafresh_generated_tokens_total 120",
            "leafresh_time_to_first_token_seconds_count 1",
            "leafresh_queue_wait_seconds_count 1",
            "leafresh_engine_errors_total 3",
            "leafresh_upstream_latency_seconds_count 1",
            "leafresh_decode_steps_total 10",
            "leafresh_decode_seconds_total 0.2",
            "leafresh_step_host_seconds_total 0.03",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
