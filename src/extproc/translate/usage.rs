//! Token usage, read from and written as either schema's `usage` object.
//!
//! The schemas count prompt tokens differently: OpenAI's `prompt_tokens` includes cached tokens,
//! Anthropic's `input_tokens` and Bedrock's `inputTokens` exclude cache reads and cache writes.
//! [`Usage`] follows OpenAI.

use serde_json::{Value, json};

/// Tokens seen in a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    pub output: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_input: u64,
    /// Prompt tokens written to the provider's cache (Anthropic, Bedrock).
    pub cache_creation_input: u64,
    /// Output tokens spent on reasoning (OpenAI's `reasoning_tokens`), part of `output`.
    pub reasoning: u64,
    pub total: u64,
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

impl Usage {
    /// From an OpenAI `usage` object (chat, completions or embeddings).
    pub(super) fn from_openai(u: &Value) -> Usage {
        Usage::from_names(
            u,
            ["prompt_tokens", "completion_tokens"],
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    }

    /// From a Responses API `usage` object.
    pub(super) fn from_responses(u: &Value) -> Usage {
        Usage::from_names(
            u,
            ["input_tokens", "output_tokens"],
            "input_tokens_details",
            "output_tokens_details",
        )
    }

    /// The OpenAI shape under either API's names: the counts, cached tokens in the input's
    /// details, reasoning tokens in the output's.
    fn from_names(
        u: &Value,
        [input, output]: [&str; 2],
        input_details: &str,
        output_details: &str,
    ) -> Usage {
        let input = count(u, input).unwrap_or(0);
        let output = count(u, output).unwrap_or(0);
        let detail =
            |details: &str, key: &str| u.get(details).and_then(|d| count(d, key)).unwrap_or(0);
        Usage {
            input,
            output,
            cached_input: detail(input_details, "cached_tokens"),
            cache_creation_input: 0,
            reasoning: detail(output_details, "reasoning_tokens"),
            total: count(u, "total_tokens").unwrap_or(input.saturating_add(output)),
        }
    }

    /// From counters that keep cache reads and writes out of `input`, as Anthropic and Bedrock
    /// count them.
    pub(super) fn from_uncached(
        input: u64,
        output: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> Usage {
        let input = input.saturating_add(cache_read).saturating_add(cache_write);
        Usage {
            input,
            output,
            cached_input: cache_read,
            cache_creation_input: cache_write,
            total: input.saturating_add(output),
            reasoning: 0,
        }
    }

    pub(super) fn to_openai(self) -> Value {
        json!({
            "prompt_tokens": self.input,
            "completion_tokens": self.output,
            "total_tokens": self.total,
            "prompt_tokens_details": {"cached_tokens": self.cached_input},
        })
    }

    pub(super) fn to_anthropic(self) -> Value {
        json!({
            "input_tokens": self.input.saturating_sub(self.cached_input),
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cached_input,
        })
    }
}

/// Anthropic's counters, kept apart because a stream reports them in pieces: `message_start`
/// has the input, `message_delta` the cumulative output (and sometimes the input again).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AnthropicCounts {
    input: u64,
    cache_read: u64,
    cache_creation: u64,
    output: u64,
}

impl AnthropicCounts {
    /// Takes every counter present in an Anthropic `usage` object.
    pub(super) fn merge(&mut self, u: &Value) {
        if let Some(n) = count(u, "input_tokens") {
            self.input = n;
        }
        if let Some(n) = count(u, "cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = count(u, "cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = count(u, "output_tokens") {
            self.output = n;
        }
    }

    pub(super) fn usage(self) -> Usage {
        Usage::from_uncached(self.input, self.output, self.cache_read, self.cache_creation)
    }
}
