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
        let input = count(u, "prompt_tokens").unwrap_or(0);
        let output = count(u, "completion_tokens").unwrap_or(0);
        let cached_input =
            u.get("prompt_tokens_details").and_then(|d| count(d, "cached_tokens")).unwrap_or(0);
        let reasoning =
            u.get("completion_tokens_details").and_then(|d| count(d, "reasoning_tokens"));
        let total = count(u, "total_tokens").unwrap_or(input.saturating_add(output));
        Usage {
            input,
            output,
            cached_input,
            reasoning: reasoning.unwrap_or(0),
            total,
            ..Default::default()
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

    /// From a Responses API `usage` object.
    pub(super) fn from_responses(u: &Value) -> Usage {
        let input = count(u, "input_tokens").unwrap_or(0);
        let output = count(u, "output_tokens").unwrap_or(0);
        let cached_input =
            u.get("input_tokens_details").and_then(|d| count(d, "cached_tokens")).unwrap_or(0);
        let reasoning = u.get("output_tokens_details").and_then(|d| count(d, "reasoning_tokens"));
        let total = count(u, "total_tokens").unwrap_or(input.saturating_add(output));
        Usage {
            input,
            output,
            cached_input,
            reasoning: reasoning.unwrap_or(0),
            total,
            ..Default::default()
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
