//! GenAI metrics, after the OpenTelemetry semantic conventions for generative AI, in Prometheus
//! form on the admin server's `/metrics`:
//!
//! - `gen_ai_client_token_usage` (histogram of tokens, `gen_ai_token_type` = `input`/`output`),
//! - `gen_ai_server_request_duration_seconds` (with `error_type` when the attempt failed),
//! - `gen_ai_server_time_to_first_token_seconds` (streamed responses),
//!
//! each labelled with `gen_ai_operation_name` (`chat`, `text_completion`, `embeddings`, and
//! `count_tokens` and `rerank`, which the conventions do not name),
//! `gen_ai_provider_name` (the backend's schema: `openai`, `anthropic`, `azure.ai.openai`, ...)
//! and `gen_ai_request_model` (the model sent to the backend, after any override).
//!
//! Takes: one [`Observation`] per upstream attempt, from the upstream phase, which is the one
//! that sees both the translated request and the response. Gives: the exposition text. A
//! duration runs from the request body reaching the upstream phase to the response's end, so a
//! fallback's failed attempt is one observation with its `error_type`, and the attempt that
//! served is another.
//!
//! Model names come from requests; past [`MAX_SERIES`] label sets, new models are counted under
//! `other` so that clients cannot grow the page without bound.
//!
//! Beside them, `aixds_extproc_messages_total{phase,message}` counts the ext_proc messages Envoy
//! sends, by phase (`router`, `pool`, `upstream`) and kind (`request_headers`, `request_body`,
//! ...): each costs a gRPC round trip on the request's path, so how many a request takes is what
//! the data path's cost follows (see BENCHMARKS.md, issue 16).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::api::APISchema;

use super::translate::Endpoint;

/// Label sets kept before new models are folded into `other`.
pub const MAX_SERIES: usize = 1000;

/// The conventions' advised bucket bounds.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// One finished (or abandoned) attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub endpoint: Endpoint,
    pub backend: APISchema,
    pub model: String,
    pub duration: Duration,
    /// Until the first response body bytes of a streamed response.
    pub time_to_first_token: Option<Duration>,
    /// `(input, output)` tokens of a successful response.
    pub tokens: Option<(u64, u64)>,
    /// The HTTP status of a failed attempt, or what else went wrong.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    operation: &'static str,
    provider: &'static str,
    model: String,
}

#[derive(Debug, Default)]
struct Series {
    input_tokens: Histogram,
    output_tokens: Histogram,
    /// By error type, `""` for success.
    duration: BTreeMap<String, Histogram>,
    ttft: Histogram,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket (not cumulative), the last one for +Inf; empty until the first observation.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        let bucket = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    fn render(&self, w: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        if self.counts.is_empty() {
            return;
        }
        let mut total = 0;
        for (bound, count) in bounds.iter().copied().chain([f64::INFINITY]).zip(&self.counts) {
            total += count;
            let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
            let _ = writeln!(w, "{name}_bucket{{{labels},le=\"{le}\"}} {total}");
        }
        let _ = writeln!(w, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(w, "{name}_count{{{labels}}} {total}");
    }
}

/// Shared by every ext_proc stream; one short lock per finished attempt.
#[derive(Debug, Default)]
pub struct GenAiMetrics {
    series: Mutex<BTreeMap<Labels, Series>>,
    messages: [[AtomicU64; MESSAGES.len()]; PHASES.len()],
}

/// The phases of [`GenAiMetrics::message`], by index.
pub const PHASES: [&str; 3] = ["router", "pool", "upstream"];
/// The ext_proc message kinds, by index.
pub const MESSAGES: [&str; 6] = [
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
];

impl GenAiMetrics {
    pub fn observe(&self, o: &Observation) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut labels = Labels {
            operation: operation(o.endpoint),
            provider: provider(o.backend),
            model: o.model.clone(),
        };
        if !series.contains_key(&labels) && series.len() >= MAX_SERIES {
            labels.model = "other".into();
        }
        let s = series.entry(labels).or_default();
        s.duration
            .entry(o.error.clone().unwrap_or_default())
            .or_default()
            .observe(DURATION_BUCKETS, o.duration.as_secs_f64());
        if let Some(ttft) = o.time_to_first_token {
            s.ttft.observe(TTFT_BUCKETS, ttft.as_secs_f64());
        }
        if let Some((input, output)) = o.tokens {
            s.input_tokens.observe(TOKEN_BUCKETS, input as f64);
            s.output_tokens.observe(TOKEN_BUCKETS, output as f64);
        }
    }

    /// Counts one ext_proc message of kind `message` (an index into [`MESSAGES`]) in `phase` (an
    /// index into [`PHASES`]).
    pub fn message(&self, phase: usize, message: usize) {
        self.messages[phase][message].fetch_add(1, Ordering::Relaxed);
    }

    /// The three metrics and the message counts, with their HELP and TYPE lines.
    pub fn render(&self, w: &mut String) {
        let name = "aixds_extproc_messages_total";
        let _ = writeln!(w, "# HELP {name} ext_proc messages received from Envoy.");
        let _ = writeln!(w, "# TYPE {name} counter");
        for (phase, counts) in PHASES.iter().zip(&self.messages) {
            for (message, count) in MESSAGES.iter().zip(counts) {
                let count = count.load(Ordering::Relaxed);
                let _ = writeln!(w, "{name}{{phase=\"{phase}\",message=\"{message}\"}} {count}");
            }
        }
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let labels = |l: &Labels| {
            format!(
                "gen_ai_operation_name=\"{}\",gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\"",
                l.operation,
                l.provider,
                escape(&l.model)
            )
        };
        let tokens = "gen_ai_client_token_usage";
        header(w, tokens, "Tokens used per request, by gen_ai_token_type (input or output).");
        for (l, s) in series.iter() {
            let l = labels(l);
            s.input_tokens.render(
                w,
                tokens,
                &format!("{l},gen_ai_token_type=\"input\""),
                TOKEN_BUCKETS,
            );
            s.output_tokens.render(
                w,
                tokens,
                &format!("{l},gen_ai_token_type=\"output\""),
                TOKEN_BUCKETS,
            );
        }
        let duration = "gen_ai_server_request_duration_seconds";
        header(w, duration, "Time from the request reaching a backend to its response's end.");
        for (l, s) in series.iter() {
            for (error, h) in &s.duration {
                let mut l = labels(l);
                if !error.is_empty() {
                    let _ = write!(l, ",error_type=\"{}\"", escape(error));
                }
                h.render(w, duration, &l, DURATION_BUCKETS);
            }
        }
        let ttft = "gen_ai_server_time_to_first_token_seconds";
        header(w, ttft, "Time from the request reaching a backend to its first streamed bytes.");
        for (l, s) in series.iter() {
            s.ttft.render(w, ttft, &labels(l), TTFT_BUCKETS);
        }
    }
}

fn header(w: &mut String, name: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// A label value as the exposition format wants it.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `gen_ai.operation.name`.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => "chat",
        // Not an operation the GenAI conventions name: no model generates anything.
        Endpoint::CountTokens => "count_tokens",
        Endpoint::Rerank => "rerank",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// `gen_ai.provider.name`, by the API the backend speaks.
fn provider(schema: APISchema) -> &'static str {
    match schema {
        APISchema::OpenAI => "openai",
        APISchema::Anthropic => "anthropic",
        APISchema::AzureOpenAI => "azure.ai.openai",
        APISchema::AWSBedrock | APISchema::AWSAnthropic => "aws.bedrock",
        APISchema::GCPVertexAI | APISchema::GCPAnthropic => "gcp.vertex_ai",
        APISchema::Cohere => "cohere",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(model: &str) -> Observation {
        Observation {
            endpoint: Endpoint::Messages,
            backend: APISchema::OpenAI,
            model: model.into(),
            duration: Duration::from_millis(30),
            time_to_first_token: Some(Duration::from_millis(3)),
            tokens: Some((12, 5)),
            error: None,
        }
    }

    #[test]
    fn renders_the_conventions_metrics() {
        let m = GenAiMetrics::default();
        m.observe(&observation("gpt-4o"));
        m.observe(&Observation {
            error: Some("503".into()),
            tokens: None,
            time_to_first_token: None,
            ..observation("gpt-4o")
        });
        let mut page = String::new();
        m.render(&mut page);
        let l = r#"gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o""#;
        for line in [
            format!(
                r#"gen_ai_client_token_usage_bucket{{{l},gen_ai_token_type="input",le="16"}} 1"#
            ),
            format!(r#"gen_ai_client_token_usage_sum{{{l},gen_ai_token_type="output"}} 5"#),
            format!(r#"gen_ai_server_request_duration_seconds_count{{{l}}} 1"#),
            format!(r#"gen_ai_server_request_duration_seconds_count{{{l},error_type="503"}} 1"#),
            format!(r#"gen_ai_server_time_to_first_token_seconds_bucket{{{l},le="0.005"}} 1"#),
        ] {
            assert!(page.lines().any(|p| p == line), "{line} not in\n{page}");
        }
    }

    #[test]
    fn models_past_the_limit_count_as_other() {
        let m = GenAiMetrics::default();
        for i in 0..MAX_SERIES + 5 {
            m.observe(&observation(&format!("m{i}")));
        }
        m.observe(&observation("\"quoted\""));
        let mut page = String::new();
        m.render(&mut page);
        assert!(page.contains(r#"gen_ai_request_model="other""#));
        assert!(!page.contains(r#"gen_ai_request_model="m1004""#));
        assert_eq!(m.series.lock().unwrap().len(), MAX_SERIES + 1);
    }
}
