//! What the compiled rate limit actions put in a descriptor, and how the service reads it back:
//! the one place both sides of that wire agree on.
//!
//! Each rule of a policy compiles to route-level `rate_limits` entries whose actions produce one
//! descriptor. Besides the client selectors' entries, the descriptor carries generic keys that
//! say everything the service needs: which bucket (`aixds.bucket`), the limit and its window
//! (`aixds.limit`, `{requests}/{unit}`), and optionally shadow mode and that the
//! hits are the response's cost charged when the stream is done. So the service keeps no
//! configuration: two replicas on one Redis agree whatever config version each Envoy has, and a
//! limit changed in a policy applies from the next request, keeping the usage counted so far.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

/// The rule's bucket: `{policy kind}/{namespace}/{name}/{rule}`, then `/{route kind}/{path}`
/// when each route the policy applies to counts apart.
pub const BUCKET: &str = "aixds.bucket";
/// `{requests}/{unit}`, e.g. `1000/Hour`.
pub const LIMIT: &str = "aixds.limit";
/// Present (`true`) in shadow mode: the service counts and reports, never refuses.
pub const SHADOW: &str = "aixds.shadow";
/// Present (`true`) on the entry charged when the stream is done (the response's cost).
pub const RESPONSE: &str = "aixds.response";
/// A `sourceCIDR` selector of type Exact: the range the masked client address must equal.
pub const CIDR: &str = "aixds.cidr";
/// The key prefix of conditions: entries present only when a header matches (Exact and
/// RegularExpression selectors, a quota's model). They gate the rule; being constant, they
/// are not part of the counter's identity, so that routes reaching one bucket by different
/// conditions (a model quota matched by header on one route and by `modelNameOverride` on
/// another) count together.
pub const CONDITION: &str = "aixds.if.";
/// The key Envoy gives the client address masked to a `sourceCIDR`'s prefix length.
pub const REMOTE_ADDRESS: &str = "masked_remote_address";

/// The window of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Unit {
    /// As Envoy Gateway spells it.
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "Second" => Unit::Second,
            "Minute" => Unit::Minute,
            "Hour" => Unit::Hour,
            "Day" => Unit::Day,
            "Month" => Unit::Month,
            "Year" => Unit::Year,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "Second",
            Unit::Minute => "Minute",
            Unit::Hour => "Hour",
            Unit::Day => "Day",
            Unit::Month => "Month",
            Unit::Year => "Year",
        }
    }

    /// The window's length. Months and years are fixed lengths (30 and 365 days), as
    /// `envoyproxy/ratelimit` counts them, so every window has the same size and starts at a
    /// multiple of it.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }
}

/// A limit: so many hits per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub requests: u64,
    pub unit: Unit,
}

impl Limit {
    pub fn encode(&self) -> String {
        format!("{}/{}", self.requests, self.unit.as_str())
    }

    pub fn decode(s: &str) -> Option<Limit> {
        let (requests, unit) = s.split_once('/')?;
        Some(Limit { requests: requests.parse().ok()?, unit: Unit::parse(unit)? })
    }
}

/// One descriptor as the service reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub bucket: String,
    pub limit: Limit,
    pub shadow: bool,
    pub response: bool,
    /// What identifies the counter: the bucket and every selector entry, in order.
    pub identity: Vec<(String, String)>,
}

/// Reads a descriptor aixds compiled; `None` for any other (no bucket or no valid limit), and
/// for a `sourceCIDR` Exact selector the client is outside of (the rule does not apply).
pub fn read(descriptor: &RateLimitDescriptor) -> Option<Check> {
    let mut bucket = None;
    let mut limit = None;
    let mut check_flags = (false, false);
    let mut cidr = None;
    let mut address = None;
    let mut identity = Vec::with_capacity(descriptor.entries.len());
    for entry in &descriptor.entries {
        match entry.key.as_str() {
            BUCKET => {
                bucket = Some(entry.value.clone());
                identity.push((entry.key.clone(), entry.value.clone()));
            }
            LIMIT => limit = Limit::decode(&entry.value),
            SHADOW => check_flags.0 = true,
            RESPONSE => check_flags.1 = true,
            CIDR => cidr = Some(entry.value.clone()),
            key if key.starts_with(CONDITION) => {}
            key => {
                if key == REMOTE_ADDRESS {
                    address = Some(entry.value.clone());
                }
                identity.push((entry.key.clone(), entry.value.clone()));
            }
        }
    }
    if let Some(cidr) = cidr
        && address.as_deref() != Some(cidr.as_str())
    {
        return None;
    }
    let (shadow, response) = check_flags;
    Some(Check { bucket: bucket?, limit: limit?, shadow, response, identity })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry { key: k.to_string(), value: v.to_string() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn limits_round_trip_and_bad_ones_are_not_checks() {
        let limit = Limit { requests: 1000, unit: Unit::Hour };
        assert_eq!(Limit::decode(&limit.encode()), Some(limit));
        for bad in ["", "10", "x/Hour", "10/hour", "-1/Hour", "10/Week"] {
            assert_eq!(Limit::decode(bad), None, "{bad}");
        }
        assert_eq!(read(&descriptor(&[(BUCKET, "b"), (LIMIT, "10/Week")])), None);
        assert_eq!(read(&descriptor(&[(LIMIT, "10/Hour"), ("x-user-id", "a")])), None);
    }

    #[test]
    fn the_identity_is_the_bucket_and_the_selectors_not_the_limit_or_flags() {
        let a = read(&descriptor(&[
            (BUCKET, "b"),
            (LIMIT, "10/Minute"),
            ("x-user-id", "alice"),
            (RESPONSE, "true"),
        ]))
        .unwrap();
        let b = read(&descriptor(&[
            (BUCKET, "b"),
            (LIMIT, "20/Minute"),
            (SHADOW, "true"),
            ("aixds.if.model", "match"),
            ("x-user-id", "alice"),
        ]))
        .unwrap();
        assert_eq!(a.identity, b.identity);
        assert!(a.response && !a.shadow && b.shadow && !b.response);
    }

    #[test]
    fn an_exact_cidr_applies_only_to_clients_inside_it() {
        let check = |address: &str| {
            read(&descriptor(&[
                (BUCKET, "b"),
                (LIMIT, "1/Second"),
                (CIDR, "10.0.0.0/8"),
                (REMOTE_ADDRESS, address),
            ]))
        };
        assert!(check("10.0.0.0/8").is_some());
        assert_eq!(check("192.168.0.0/8"), None);
    }
}
