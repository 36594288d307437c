//! Integration tests: one binary, one module per area.

mod admin;
mod ads;
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
mod kubeapi;
mod kubernetes;
mod local_reply;
mod picker;
mod source;
mod tls;
mod translate;
