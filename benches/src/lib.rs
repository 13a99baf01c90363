//! Benchmarks live in `bench_main.rs` and `benchmarks/`; run them with `cargo xtask bench criterion`.
