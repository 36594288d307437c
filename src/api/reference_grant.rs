//! Gateway API `ReferenceGrant`: lets objects of the kinds and namespaces in `from` reference
//! objects of the kinds (and names) in `to` in the grant's own namespace.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

/// Who may reference: objects of `group`/`kind` (`""` is the core group) in `namespace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferenceGrantFrom {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// What may be referenced: objects of `group`/`kind` in the grant's namespace, only the one
/// named `name` when it is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferenceGrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReferenceGrantSpec {
    /// Whether the grant lets an object of `from_kind` in `from_namespace` reference the object
    /// of `to_kind` named `to_name` in the grant's namespace. Kinds are `(group, kind)`.
    pub fn permits(
        &self,
        (from_group, from_kind): (&str, &str),
        from_namespace: &str,
        (to_group, to_kind): (&str, &str),
        to_name: &str,
    ) -> bool {
        self.from
            .iter()
            .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_namespace)
            && self.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_permits_what_both_lists_name() {
        let grant: ReferenceGrantSpec = serde_norway::from_str(
            "from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: a}]\n\
             to: [{group: '', kind: Secret, name: cert}, {kind: Service}]",
        )
        .unwrap();
        let gateway = ("gateway.networking.k8s.io", "Gateway");
        assert!(grant.permits(gateway, "a", ("", "Secret"), "cert"));
        assert!(grant.permits(gateway, "a", ("", "Service"), "any"), "no name: every object");
        assert!(!grant.permits(gateway, "a", ("", "Secret"), "other"), "only the named Secret");
        assert!(!grant.permits(gateway, "b", ("", "Secret"), "cert"), "another namespace");
        let route = ("aigateway.envoyproxy.io", "AIGatewayRoute");
        assert!(!grant.permits(route, "a", ("", "Secret"), "cert"), "another kind");
    }
}
