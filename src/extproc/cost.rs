//! A route's `llmRequestCosts`, ready to evaluate: each metadata key with the token count it
//! takes, or a CEL expression over the counts (Envoy AI Gateway's `CEL` type), compiled once per
//! route when the runtime table is built, and evaluated per response.
//!
//! CEL variables, as Envoy AI Gateway names them: `model` (the model the backend was asked for),
//! `backend` (`{name}.{namespace}` of the AIServiceBackend), and the unsigned counts
//! `input_tokens`, `cached_input_tokens`, `cache_creation_input_tokens`, `output_tokens`,
//! `total_tokens`, `reasoning_tokens`. The result must be a non-negative integer; anything
//! else writes no value (and is logged), so a rate limit reading that key charges nothing.

use std::sync::Arc;

use crate::api::{LLMRequestCost, LLMRequestCostType};
use crate::extproc::translate::Usage;

/// One `llmRequestCosts` entry.
#[derive(Clone)]
pub struct RequestCost {
    pub metadata_key: String,
    kind: CostKind,
}

#[derive(Clone)]
enum CostKind {
    Count(LLMRequestCostType),
    Cel(Arc<cel::Program>),
}

impl std::fmt::Debug for RequestCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            CostKind::Count(t) => format!("{t:?}"),
            CostKind::Cel(_) => "CEL".into(),
        };
        write!(f, "{}={kind}", self.metadata_key)
    }
}

/// Parses a CEL cost expression; why not, in words.
pub fn compile_cel(expression: &str) -> Result<cel::Program, String> {
    // The parser is a large generated one: never let a surprise in it take the process down.
    match std::panic::catch_unwind(|| cel::Program::compile(expression)) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(format!("the CEL expression {expression:?} does not parse: {e}")),
        Err(_) => Err(format!("the CEL expression {expression:?} does not parse")),
    }
}

/// The costs of a route; entries whose CEL does not parse are left out (the route is then not
/// accepted anyway: the graph checks each expression).
pub fn compile(costs: &[LLMRequestCost]) -> Arc<[RequestCost]> {
    costs
        .iter()
        .filter_map(|c| {
            let kind = match c.cost_type {
                LLMRequestCostType::Cel => {
                    CostKind::Cel(Arc::new(compile_cel(c.cel.as_deref().unwrap_or("")).ok()?))
                }
                other => CostKind::Count(other),
            };
            Some(RequestCost { metadata_key: c.metadata_key.clone(), kind })
        })
        .collect()
}

/// A QuotaPolicy's cost under `metadata_key`: its CEL expression, or the total tokens.
pub fn quota_cost(metadata_key: String, expression: Option<&str>) -> Option<RequestCost> {
    let kind = match expression {
        Some(e) => CostKind::Cel(Arc::new(compile_cel(e).ok()?)),
        None => CostKind::Count(LLMRequestCostType::TotalToken),
    };
    Some(RequestCost { metadata_key, kind })
}

impl RequestCost {
    /// The value for this response; `None` when a CEL expression fails or gives no
    /// non-negative integer.
    pub fn evaluate(&self, usage: Usage, model: &str, backend: &str) -> Option<u64> {
        let program = match &self.kind {
            CostKind::Count(t) => {
                return Some(match t {
                    LLMRequestCostType::InputToken => usage.input,
                    LLMRequestCostType::CachedInputToken => usage.cached_input,
                    LLMRequestCostType::CacheCreationInputToken => usage.cache_creation_input,
                    LLMRequestCostType::OutputToken => usage.output,
                    LLMRequestCostType::TotalToken => usage.total,
                    LLMRequestCostType::ReasoningToken => usage.reasoning,
                    LLMRequestCostType::Cel => return None,
                });
            }
            CostKind::Cel(program) => program,
        };
        let mut context = cel::Context::default();
        for (name, n) in [
            ("input_tokens", usage.input),
            ("cached_input_tokens", usage.cached_input),
            ("cache_creation_input_tokens", usage.cache_creation_input),
            ("output_tokens", usage.output),
            ("total_tokens", usage.total),
            ("reasoning_tokens", usage.reasoning),
        ] {
            context.add_variable_from_value(name, cel::Value::UInt(n));
        }
        context.add_variable_from_value("model", cel::Value::String(Arc::new(model.to_string())));
        context
            .add_variable_from_value("backend", cel::Value::String(Arc::new(backend.to_string())));
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&context)));
        match result {
            Ok(Ok(cel::Value::UInt(n))) => Some(n),
            Ok(Ok(cel::Value::Int(n))) if n >= 0 => Some(n as u64),
            other => {
                let got = match other {
                    Ok(Ok(value)) => format!("{value:?}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "a panic".into(),
                };
                tracing::warn!(key = %self.metadata_key, result = %got,
                    "a CEL request cost gave no non-negative integer; no value written");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(cost_type: LLMRequestCostType, cel: Option<&str>) -> RequestCost {
        let spec = LLMRequestCost { metadata_key: "k".into(), cost_type, cel: cel.map(Into::into) };
        compile(&[spec])[0].clone()
    }

    const USAGE: Usage = Usage {
        input: 3,
        output: 5,
        cached_input: 1,
        cache_creation_input: 2,
        reasoning: 4,
        total: 8,
    };

    #[test]
    fn counts_and_cel_expressions_evaluate_over_the_usage() {
        let eval = |c: RequestCost| c.evaluate(USAGE, "gpt-4o", "oa.default");
        assert_eq!(eval(cost(LLMRequestCostType::CacheCreationInputToken, None)), Some(2));
        assert_eq!(eval(cost(LLMRequestCostType::ReasoningToken, None)), Some(4));
        // Envoy AI Gateway's token example.
        let upstream = Some("input_tokens == uint(3) ? 100000000 : 0");
        assert_eq!(eval(cost(LLMRequestCostType::Cel, upstream)), Some(100_000_000));
        let priced = Some("model == 'gpt-4o' && backend == 'oa.default' ? output_tokens * 6u : 0u");
        assert_eq!(eval(cost(LLMRequestCostType::Cel, priced)), Some(30));
        for bad in ["input_tokens - 10", "'text'", "nope + 1", "1.5"] {
            assert_eq!(eval(cost(LLMRequestCostType::Cel, Some(bad))), None, "{bad}");
        }
    }

    #[test]
    fn expressions_that_do_not_parse_are_refused_in_words() {
        let err = compile_cel("input_tokens +").unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
        assert!(
            compile(&[LLMRequestCost {
                metadata_key: "k".into(),
                cost_type: LLMRequestCostType::Cel,
                cel: Some("((".into())
            }])
            .is_empty()
        );
    }
}
