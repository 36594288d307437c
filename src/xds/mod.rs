//! Serving compiled Envoy resources over ADS.
//!
//! Takes: [`Update`]s from the compiler. Gives: a versioned [`Snapshot`] published with
//! `ArcSwap`, a log of which names changed at each revision (so that each stream sends only
//! those), and the ADS gRPC service (delta and state-of-the-world) with a registry of connected
//! Envoys and a log of what each push sent.

mod ack;
mod clients;
mod delta;
mod server;
mod snapshot;
mod sotw;
mod stats;
#[cfg(test)]
mod test_support;

pub use ack::{Answer, Nack, UnknownType};
pub use clients::{ClientInfo, Clients, PUSH_LOG_LEN, PushLog, PushRecord, StreamKind, TypeInfo};
pub use delta::DeltaState;
pub use server::AdsServer;
pub use snapshot::{ResourceMap, Snapshot, SnapshotStore};
pub use sotw::SotwState;
pub use stats::{Histogram, HistogramValues, LATENCY_BUCKETS, XdsStats};

use std::fmt;

use envoy_types::pb::google::protobuf::Any;

use crate::api::ObjectKey;

/// The resource types aixds serves, in the order a push sends them: clusters before their
/// endpoints, listeners before their routes and TLS certificates (Envoy subscribes to a secret
/// by name when it gets a listener that names it, and warms that listener until it arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum TypeUrl {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    ScopedRouteConfiguration,
    RouteConfiguration,
    Secret,
}

/// How many resource types there are: the length of per-type arrays.
pub const TYPE_COUNT: usize = TypeUrl::ALL.len();

impl TypeUrl {
    pub const ALL: [TypeUrl; 6] = [
        TypeUrl::Cluster,
        TypeUrl::ClusterLoadAssignment,
        TypeUrl::Listener,
        TypeUrl::ScopedRouteConfiguration,
        TypeUrl::RouteConfiguration,
        TypeUrl::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::ScopedRouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
            }
            TypeUrl::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            TypeUrl::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    pub fn parse(s: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Parses the short name (`Cluster`) or the full type URL.
    pub fn parse_any(s: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == s || t.to_string().eq_ignore_ascii_case(s))
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether Envoy subscribes to every resource of this type (wildcard) rather than by name.
    pub fn wildcard_by_default(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Listener | TypeUrl::ScopedRouteConfiguration)
    }
}

impl fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = match self {
            TypeUrl::Cluster => "Cluster",
            TypeUrl::ClusterLoadAssignment => "ClusterLoadAssignment",
            TypeUrl::Listener => "Listener",
            TypeUrl::ScopedRouteConfiguration => "ScopedRouteConfiguration",
            TypeUrl::RouteConfiguration => "RouteConfiguration",
            TypeUrl::Secret => "Secret",
        };
        f.write_str(short)
    }
}

/// One compiled Envoy resource. `Debug` shows its size, never its bytes: a Secret's body is a
/// private key.
#[derive(Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Hash of the encoded bytes: equal versions mean identical resources.
    pub version: String,
    pub body: Any,
    /// The objects it was compiled from, so that Envoy's errors can be traced back to them.
    pub sources: Vec<ObjectKey>,
}

impl Resource {
    /// Encodes `message` and versions it by the hash of its bytes.
    pub fn new<M: prost::Name>(name: String, message: &M, sources: Vec<ObjectKey>) -> Resource {
        let value = message.encode_to_vec();
        let version = format!("{:016x}", crate::api::hash_bytes(&value));
        Resource { name, version, body: Any { type_url: M::type_url(), value }, sources }
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("type_url", &self.body.type_url)
            .field("size", &self.body.value.len())
            .field("sources", &self.sources)
            .finish()
    }
}

/// A change to one resource: `resource: None` removes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub type_url: TypeUrl,
    pub name: String,
    pub resource: Option<Resource>,
}
