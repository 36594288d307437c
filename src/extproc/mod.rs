//! The Envoy ext_proc side of aixds. [`translate`] is its pure core: request and response bodies
//! in, translated bodies and token usage out.
pub mod translate;
