//! Property tests: generated inputs, checked against invariants rather than examples.
//!
//! Case counts are kept small so that the suite stays fast; each test says its count. A failing
//! case is kept as a regular regression test next to the property that found it, not in a
//! persistence file.

mod api_shapes;
mod cohere;
mod envoy;
mod gemini_shape;
mod incremental;
mod manifest;
mod translate;
mod vertex;

use proptest::test_runner::{Config, RngSeed};

/// `cases` cases from a fixed seed, so that a run fails or passes the same way every time
/// (`PROPTEST_RNG_SEED=N` explores other cases), with nothing written to disk.
fn config(cases: u32) -> Config {
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => Config::default().rng_seed,
        None => RngSeed::Fixed(11),
    };
    Config {
        cases,
        max_shrink_iters: 2_000,
        failure_persistence: None,
        rng_seed,
        ..Config::default()
    }
}
