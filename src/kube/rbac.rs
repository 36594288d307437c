//! What aixds reads and writes at the API server, in one table: the watchers take the kinds and
//! selectors from [`WATCHED`], the status writer the kinds it may patch, the elector its Lease
//! verbs from [`WRITTEN`], and `aixds rbac` prints [`cluster_role_rules`] (the chart's ClusterRole
//! uses that output, `charts/aixds/files/rbac-rules.yaml`, kept equal by a test).

use std::fmt::Write;

use crate::api::Kind;

/// One kind aixds watches.
#[derive(Debug, Clone, Copy)]
pub struct Watched {
    pub kind: Kind,
    /// The resource name in the API path.
    pub plural: &'static str,
    /// A field selector for the list and watch; see the module docs of [`super::watch`] for why.
    pub field_selector: Option<&'static str>,
    /// aixds writes this kind's `status` subresource.
    pub status: bool,
}

/// Every kind the graph uses, in the order they are listed on startup.
pub const WATCHED: &[Watched] = &[
    watched(Kind::AIGatewayRoute, "aigatewayroutes", true),
    watched(Kind::AIServiceBackend, "aiservicebackends", true),
    watched(Kind::BackendSecurityPolicy, "backendsecuritypolicies", true),
    watched(Kind::Backend, "backends", false),
    watched(Kind::BackendTLSPolicy, "backendtlspolicies", false),
    watched(Kind::BackendTrafficPolicy, "backendtrafficpolicies", true),
    watched(Kind::Gateway, "gateways", true),
    watched(Kind::GatewayClass, "gatewayclasses", true),
    watched(Kind::HTTPRoute, "httproutes", true),
    watched(Kind::InferencePool, "inferencepools", true),
    watched(Kind::QuotaPolicy, "quotapolicies", true),
    watched(Kind::ReferenceGrant, "referencegrants", false),
    Watched {
        kind: Kind::Secret,
        plural: "secrets",
        field_selector: Some(SECRET_FIELD_SELECTOR),
        status: false,
    },
    Watched {
        kind: Kind::Pod,
        plural: "pods",
        field_selector: Some(POD_FIELD_SELECTOR),
        status: false,
    },
    watched(Kind::Service, "services", false),
    watched(Kind::EndpointSlice, "endpointslices", false),
];

/// Secrets that can never be an API key or a certificate aixds reads: Helm release records
/// (large, one per revision) and service-account tokens.
pub const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Only running Pods have an address to send traffic to; the API server sends a delete when a
/// Pod stops running, which removes it from its pools.
pub const POD_FIELD_SELECTOR: &str = "status.phase=Running";

const fn watched(kind: Kind, plural: &'static str, status: bool) -> Watched {
    Watched { kind, plural, field_selector: None, status }
}

/// One rule of a ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: Vec<String>,
    pub verbs: &'static [&'static str],
}

/// What the watchers need: the initial list and the watch (kube-runtime's watcher uses no
/// other verb).
pub const READ_VERBS: &[&str] = &["list", "watch"];
/// What the status writer needs: server-side apply of the status subresource.
pub const STATUS_VERBS: &[&str] = &["patch"];
/// What the elector needs: read the Lease, create it the first time, renew or take it over.
pub const LEASE_VERBS: &[&str] = &["get", "create", "update"];
pub const LEASE_GROUP: &str = "coordination.k8s.io";

/// Everything aixds writes besides status: the leader-election Lease.
pub const WRITTEN: &[(&str, &str, &[&str])] = &[(LEASE_GROUP, "leases", LEASE_VERBS)];

/// The rules of aixds's namespaced Role, in the namespace of its Lease: the Lease alone.
pub fn lease_rules() -> Vec<Rule> {
    WRITTEN
        .iter()
        .map(|(group, resource, verbs)| Rule {
            group,
            resources: vec![resource.to_string()],
            verbs,
        })
        .collect()
}

/// The rules of aixds's ClusterRole: read per group, status patch per group. The Lease is not
/// among them: a namespaced Role grants it ([`lease_rules`]; the chart's `templates/rbac.yaml`
/// narrows it to the one Lease).
pub fn cluster_role_rules() -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut push =
        |group: &'static str, resource: String, verbs: &'static [&'static str]| match rules
            .iter_mut()
            .find(|r| r.group == group && r.verbs == verbs)
        {
            Some(rule) => rule.resources.push(resource),
            None => rules.push(Rule { group, resources: vec![resource], verbs }),
        };
    for w in WATCHED {
        push(w.kind.group(), w.plural.to_string(), READ_VERBS);
    }
    for w in WATCHED.iter().filter(|w| w.status) {
        push(w.kind.group(), format!("{}/status", w.plural), STATUS_VERBS);
    }
    for rule in &mut rules {
        rule.resources.sort();
    }
    rules.sort_by(|a, b| (a.group, a.verbs).cmp(&(b.group, b.verbs)));
    rules
}

/// The ClusterRole's rules as a YAML list (the chart's template puts it under `rules:`).
pub fn rules_yaml() -> String {
    let mut out = String::from(
        "# Generated by `aixds rbac`; do not edit. What aixds reads and writes cluster-wide; its\n\
         # Lease is granted by a namespaced Role (templates/rbac.yaml).\n",
    );
    for rule in cluster_role_rules() {
        let _ = writeln!(out, "- apiGroups: [\"{}\"]", rule.group);
        let _ = writeln!(out, "  resources: [{}]", rule.resources.join(", "));
        let _ = writeln!(out, "  verbs: [{}]", rule.verbs.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_graph_reads_is_watched() {
        for kind in Kind::ALL {
            assert!(WATCHED.iter().any(|w| w.kind == kind), "{kind}");
        }
    }

    #[test]
    fn rules_group_resources_by_group_and_verbs() {
        let rules = cluster_role_rules();
        let core_read = rules.iter().find(|r| r.group.is_empty() && r.verbs == READ_VERBS);
        assert_eq!(core_read.unwrap().resources, ["pods", "secrets", "services"]);
        let status =
            rules.iter().find(|r| r.group == "aigateway.envoyproxy.io" && r.verbs == STATUS_VERBS);
        assert_eq!(
            status.unwrap().resources,
            [
                "aigatewayroutes/status",
                "aiservicebackends/status",
                "backendsecuritypolicies/status",
                "quotapolicies/status"
            ]
        );
        assert!(rules.iter().all(|r| !r.verbs.contains(&"delete")));
    }
}
