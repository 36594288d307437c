//! Envoy AI Gateway's `QuotaPolicy` (`aigateway.envoyproxy.io/v1alpha1`): token quotas per
//! AIServiceBackend, for the whole backend (`serviceQuota`) and per model (`perModelQuotas`),
//! each a default bucket and buckets per client (`bucketRules`, Envoy Gateway's client
//! selectors), charged a CEL cost expression over the response's usage (total tokens when none
//! is given). Counted by the same rate limit service as BackendTrafficPolicies.
//!
//! A model quota applies to requests whose backend is asked for `modelName`: the backendRef's
//! `modelNameOverride` when it has one, else the request's model.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{LocalPolicyTargetReference, RateLimitSelectCondition};
use crate::ratelimit::descriptor::{Limit, Unit};

#[derive(
    kube::CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "aigateway.envoyproxy.io",
    version = "v1alpha1",
    kind = "QuotaPolicy",
    namespaced,
    status = "super::ObjectStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct QuotaPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_quota: Option<ServiceQuota>,
    #[serde(default)]
    pub per_model_quotas: Vec<PerModelQuota>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceQuota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_expression: Option<String>,
    #[serde(default)]
    pub quota: QuotaValue,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerModelQuota {
    #[serde(default)]
    pub model_name: String,
    #[serde(default)]
    pub quota: QuotaDefinition,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_expression: Option<String>,
    /// `Shared` (the only mode): a request is charged to every bucket that matches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_bucket: Option<QuotaValue>,
    #[serde(default)]
    pub bucket_rules: Vec<QuotaBucketRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaBucketRule {
    #[serde(default)]
    pub client_selectors: Vec<RateLimitSelectCondition>,
    #[serde(default)]
    pub quota: QuotaValue,
    #[serde(default)]
    pub shadow_mode: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaValue {
    #[serde(default)]
    pub limit: u64,
    /// `1s`, `1m`, `1h` or `1d`.
    #[serde(default)]
    pub duration: String,
}

impl QuotaValue {
    pub fn limit(&self) -> Option<Limit> {
        let unit = match self.duration.as_str() {
            "1s" => Unit::Second,
            "1m" => Unit::Minute,
            "1h" => Unit::Hour,
            "1d" => Unit::Day,
            _ => return None,
        };
        Some(Limit { requests: self.limit, unit })
    }
}

impl QuotaPolicySpec {
    /// What aixds cannot apply as written, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.target_refs.is_empty() {
            out.push("spec.targetRefs is empty".into());
        }
        let mut check_value = |at: &str, v: &QuotaValue| {
            if v.limit().is_none() {
                out.push(format!("{at}.duration {:?} is not 1s, 1m, 1h or 1d", v.duration));
            }
        };
        if let Some(service) = &self.service_quota {
            check_value("spec.serviceQuota.quota", &service.quota);
        }
        for (m, model) in self.per_model_quotas.iter().enumerate() {
            let at = format!("spec.perModelQuotas[{m}]");
            if let Some(default) = &model.quota.default_bucket {
                check_value(&format!("{at}.quota.defaultBucket"), default);
            }
            for (r, rule) in model.quota.bucket_rules.iter().enumerate() {
                check_value(&format!("{at}.quota.bucketRules[{r}].quota"), &rule.quota);
            }
        }
        for (m, model) in self.per_model_quotas.iter().enumerate() {
            let at = format!("spec.perModelQuotas[{m}]");
            if model.model_name.is_empty() {
                out.push(format!("{at}.modelName is empty"));
            }
            if let Some(mode) = model.quota.mode.as_deref().filter(|m| *m != "Shared") {
                out.push(format!("{at}.quota.mode {mode:?} is not Shared"));
            }
            for (r, rule) in model.quota.bucket_rules.iter().enumerate() {
                let at = format!("{at}.quota.bucketRules[{r}]");
                for (s, selector) in rule.client_selectors.iter().enumerate() {
                    let at = format!("{at}.clientSelectors[{s}]");
                    // Envoy AI Gateway honours only header selectors here.
                    if selector.source_cidr.is_some()
                        || !selector.methods.is_empty()
                        || selector.path.is_some()
                        || !selector.query_params.is_empty()
                    {
                        out.push(format!("{at}: only headers are supported in a QuotaPolicy"));
                    }
                }
                let rule = super::RateLimitRule {
                    client_selectors: rule.client_selectors.clone(),
                    ..Default::default()
                };
                out.extend(
                    super::traffic_policy::selector_problems(&at, &rule)
                        .into_iter()
                        .filter(|p| !p.contains("selects nothing")),
                );
            }
        }
        let expressions = self
            .service_quota
            .iter()
            .map(|s| ("spec.serviceQuota.costExpression".to_string(), &s.cost_expression))
            .chain(self.per_model_quotas.iter().enumerate().map(|(m, q)| {
                (format!("spec.perModelQuotas[{m}].quota.costExpression"), &q.quota.cost_expression)
            }));
        for (at, expression) in expressions {
            if let Some(expression) = expression
                && let Err(e) = crate::extproc::cost::compile_cel(expression)
            {
                out.push(format!("{at}: {e}"));
            }
        }
        out
    }
}
