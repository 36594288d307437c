//! The Kubernetes client side of aixds: watches that feed the graph, status written back,
//! leader election, and the RBAC all of that needs.
//!
//! Takes: a kube-rs [`kube::Config`] (from the kubeconfig or the in-cluster service account, or
//! one a test points at its own API server) and [`KubeOptions`].
//! Gives: a [`watch::KubeSource`] that the run loop reads like the manifest files (the same
//! [`crate::source::Change`]s), a [`status`] writer, a [`lease`] elector, and [`rbac`]: the one
//! table of what aixds reads and writes, which the watchers and the status writer use and
//! `aixds rbac` prints as ClusterRole rules.
//!
//! Everything that talks to an API server lives here; the graph and the compiler know nothing of
//! it.

pub mod lease;
pub mod rbac;
pub mod status;
pub mod watch;

use std::time::Duration;

pub use watch::KubeSource;

/// How `aixds serve` talks to Kubernetes.
#[derive(Clone)]
pub struct KubeOptions {
    /// `None`: the kubeconfig, or the in-cluster service account ([`kube::Config::infer`]).
    pub config: Option<kube::Config>,
    /// Watch this namespace only; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// How often discovery is asked again for a kind whose CRD is not installed, so that a CRD
    /// installed later is watched without a restart.
    pub discovery_interval: Duration,
    /// Leader election and status writing; `None` writes no status.
    pub status: Option<lease::LeaseOptions>,
    /// The Service whose address Gateways report in `status.addresses` (the Envoy Service).
    pub gateway_service: Option<crate::api::ObjectKey>,
}

impl std::fmt::Debug for KubeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config may carry credentials.
        f.debug_struct("KubeOptions")
            .field("cluster_url", &self.config.as_ref().map(|c| c.cluster_url.to_string()))
            .field("namespace", &self.namespace)
            .field("discovery_interval", &self.discovery_interval)
            .field("status", &self.status)
            .field("gateway_service", &self.gateway_service)
            .finish()
    }
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            config: None,
            namespace: None,
            discovery_interval: Duration::from_secs(10),
            status: None,
            gateway_service: None,
        }
    }
}

/// A client for the options' API server.
pub async fn client(opts: &KubeOptions) -> Result<kube::Client, kube::Error> {
    let config = match &opts.config {
        Some(config) => config.clone(),
        None => kube::Config::infer().await.map_err(kube::Error::InferConfig)?,
    };
    kube::Client::try_from(config)
}

/// Is this error the API server saying the resource does not exist (a CRD not installed)?
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}
