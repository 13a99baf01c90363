//! The suite's bounded fuzzing run: every target for a short while from its committed corpus, with the counting
//! allocator installed, and every saved regression input (`fixtures/fuzz/*/regress-*`) replayed. Longer runs are
//! `cargo xtask fuzz TARGET --seconds N`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[global_allocator]
static ALLOC: m6rec_fuzz::alloc::Counting = m6rec_fuzz::alloc::Counting;

/// Seconds per target (`M6REC_FUZZ_SECONDS`, default 1.5).
fn seconds() -> f64 {
    std::env::var("M6REC_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.5)
}

#[test]
fn every_target_runs_its_corpus_and_mutations_without_a_finding() {
    let _rng = m6rec_testkit::torch_rng();
    tch::set_num_threads(1);
    let mut lines = Vec::new();
    for t in m6rec_fuzz::targets::all() {
        let corpus = m6rec_fuzz::load_corpus(&m6rec_fuzz::corpus_dir(t.name));
        assert!(!corpus.is_empty(), "{}: no committed corpus in fixtures/fuzz (m6rec-fuzz seeds writes it)", t.name);
        // The committed corpus holds every seed the target makes today.
        assert!(corpus.len() >= (t.seeds)().len(), "{}: the committed corpus is older than its seeds", t.name);
        let budget = m6rec_fuzz::Budget { seconds: seconds(), max_inputs: u64::MAX };
        let r = m6rec_fuzz::run(&t, &corpus, 0xC1, budget, |_| {}).unwrap();
        let found: Vec<String> = r.findings.iter().map(|f| format!("input {}: {}", f.index, f.message)).collect();
        assert_eq!(r.n_findings, 0, "{}: {found:?}", t.name);
        assert!(r.inputs >= 50, "{}: only {} inputs in {:.1} s", t.name, r.inputs, r.seconds);
        assert!(
            r.accepted > 0 && r.refused > 0,
            "{}: {} accepted, {} refused: the mutations miss one side",
            t.name,
            r.accepted,
            r.refused
        );
        lines.push(format!(
            "{:<20} {:>7} inputs {:>6} accepted  peak {:>6.1} MiB",
            t.name,
            r.inputs,
            r.accepted,
            r.max_peak as f64 / 1048576.0
        ));
    }
    eprintln!("{}", lines.join("\n"));
}

#[test]
fn saved_regressions_are_refused_cleanly() {
    let _rng = m6rec_testkit::torch_rng();
    let mut n = 0;
    for t in m6rec_fuzz::targets::all() {
        let dir = m6rec_fuzz::corpus_dir(t.name);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("regress-")))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let before = m6rec_fuzz::alloc::reset_peak();
            let out = std::panic::catch_unwind(|| m6rec_fuzz::replay(&t, &bytes));
            assert!(out.is_ok(), "{}: {} panics", t.name, f.display());
            let peak = m6rec_fuzz::alloc::peak() - before;
            assert!(peak < m6rec_fuzz::MAX_INPUT_PEAK, "{}: {} held {peak} bytes", t.name, f.display());
            n += 1;
        }
    }
    assert!(n >= 4, "the saved regressions are gone: {n}");
}
