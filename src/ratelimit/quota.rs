//! The QuotaPolicies that apply to an AIServiceBackend, read from the graph once for the two
//! sides that need them: the compiler (the checks and charges on each route to the backend)
//! and the translation ext_proc (which writes each quota's cost to dynamic metadata when a
//! response from the backend is done).
//!
//! Each quota (the whole backend's `serviceQuota`, or one `perModelQuotas` entry) has its own
//! metadata key, naming the backend too: a rule that splits or falls back across backends
//! charges only the backend that served (Envoy drops a descriptor whose metadata is missing).

use crate::api::{Kind, ObjectKey, QuotaValue, RateLimitSelectCondition, Spec};
use crate::graph::Graph;
use crate::ratelimit::descriptor::Limit;

/// One quota on a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota<'g> {
    pub policy: &'g ObjectKey,
    /// The model it is for; `None`: every request to the backend (`serviceQuota`).
    pub model: Option<&'g str>,
    /// `service` or `model/{index}`.
    pub name: String,
    /// The CEL cost; `None`: the response's total tokens.
    pub cost_expression: Option<&'g str>,
    pub buckets: Vec<Bucket<'g>>,
}

/// A bucket of a quota: the default one (no selectors) or a `bucketRules` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket<'g> {
    /// `default` or `rule/{index}`.
    pub name: String,
    pub limit: Limit,
    pub selectors: &'g [RateLimitSelectCondition],
    pub shadow: bool,
}

/// The quotas of the accepted QuotaPolicies targeting `backend` (an AIServiceBackend), by
/// policy key.
pub fn quotas<'g>(graph: &'g Graph, backend: &ObjectKey) -> Vec<Quota<'g>> {
    let policies: Vec<_> = graph
        .targeting(backend)
        .into_iter()
        .filter(|node| node.accepted())
        .filter_map(|node| match &node.object.as_deref()?.spec {
            Spec::QuotaPolicy(p) => Some((&node.key, p)),
            _ => None,
        })
        .collect();
    let bucket = |name: String, value: &QuotaValue, selectors, shadow| {
        Some(Bucket { name, limit: value.limit()?, selectors, shadow })
    };
    let mut out = Vec::new();
    for (key, policy) in policies {
        if let Some(service) = &policy.service_quota {
            out.push(Quota {
                policy: key,
                model: None,
                name: "service".into(),
                cost_expression: service.cost_expression.as_deref(),
                buckets: bucket("default".into(), &service.quota, &[], false).into_iter().collect(),
            });
        }
        for (m, per_model) in policy.per_model_quotas.iter().enumerate() {
            let q = &per_model.quota;
            let default =
                q.default_bucket.as_ref().and_then(|v| bucket("default".into(), v, &[], false));
            let rules = q.bucket_rules.iter().enumerate().filter_map(|(r, rule)| {
                bucket(
                    format!("rule/{r}"),
                    &rule.quota,
                    &rule.client_selectors[..],
                    rule.shadow_mode,
                )
            });
            out.push(Quota {
                policy: key,
                model: Some(per_model.model_name.as_str()),
                name: format!("model/{m}"),
                cost_expression: q.cost_expression.as_deref(),
                buckets: default.into_iter().chain(rules).collect(),
            });
        }
    }
    out
}

impl Quota<'_> {
    /// The `io.envoy.ai_gateway` metadata key the ext_proc writes this quota's cost under
    /// for a response from `backend`.
    pub fn metadata_key(&self, backend: &ObjectKey) -> String {
        debug_assert_eq!(backend.kind, Kind::AIServiceBackend);
        format!("quota/{}/{}/{}", self.policy.path(), self.name, backend.path())
    }

    /// The bucket's id for the rate limit service: the policy, the quota, the bucket and the
    /// backend.
    pub fn bucket_id(&self, bucket: &Bucket, backend: &ObjectKey) -> String {
        format!(
            "QuotaPolicy/{}/{}/{}/{}",
            self.policy.path(),
            self.name,
            bucket.name,
            backend.path()
        )
    }
}
