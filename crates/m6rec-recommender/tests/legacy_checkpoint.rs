//! A checkpoint written before the one recommender type, checksums and directory markers (format version 1, the
//! files inference needs: `config.json`, `model.safetensors`, `state.json`), committed in
//! `fixtures/checkpoints/v1-demo` (see its `SOURCE.md`), still loads and ranks as it did when it was written.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_recommender::Recommender;
use tch::Device;

#[test]
fn a_version_1_checkpoint_without_checksums_or_marker_loads_and_ranks_as_written() {
    let dir = m6rec_testkit::fixture("checkpoints/v1-demo");
    let rec = Recommender::load(&dir, Device::Cpu, None).unwrap();
    assert_eq!(rec.config.dataset.n_items, 360);
    let scores = rec.scorer().unwrap().score_histories(&[&[0, 1, 2, 3, 4]]).unwrap();
    assert_eq!(scores.size(), [1, 360]);
    let top: Vec<i64> = Vec::try_from(scores.topk(5, 1, true, true).1.view([-1])).unwrap();
    let expected: Vec<i64> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected_top5.json")).unwrap()).unwrap();
    assert_eq!(top, expected, "the ranking this checkpoint gave when it was written");
}
