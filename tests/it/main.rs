//! Integration tests: one binary, one module per area.

mod admin;
mod ads;
mod auth;
mod builders;
mod cli;
mod compat;
mod compile;
mod crds;
mod envoy;
mod envoy_translate;
mod extproc;
mod graph;
mod harness;
mod isolation;
mod kube_lease;
mod kube_status;
mod kube_watch;
mod kubeapi;
mod kubernetes;
mod local_reply;
mod picker;
mod properties;
mod sds;
mod source;
mod tls;
mod translate;
