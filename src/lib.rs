//! aixds: an xDS control plane for Envoy-based AI gateways.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod compile;
pub mod crds;
pub mod extproc;
pub mod graph;
pub mod kube;
pub mod picker;
pub mod ratelimit;
pub mod run;
pub mod source;
pub mod status;
pub mod wire;
pub mod xds;
