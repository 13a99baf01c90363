//! Integration tests of the data layer: importers, the on-disk format, the RecBole split, the demo fixture.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_data::import::{import, Format};
use m6rec_data::{synth, Dataset, Split};
use m6rec_testkit::{fixture, shared_data};
use std::path::Path;

fn write(dir: &Path, name: &str, content: &[u8]) {
    std::fs::write(dir.join(name), content).unwrap();
}

#[test]
fn movielens_100k_imports_every_row_and_decodes_latin1() {
    let imported = import(Format::MovieLens, &shared_data("ml-100k")).unwrap();
    let (ds, r) = (imported.dataset, imported.report);
    assert_eq!((r.imported, r.n_users, r.n_items, r.skipped.len()), (100_000, 943, 1682, 0));
    assert!(ds.items.iter().any(|i| i.title == "Misérables, Les (1995)"), "latin-1 titles must decode");
    let toy = &ds.items[ds.item_idx("1").unwrap() as usize];
    assert_eq!(toy.title, "Toy Story (1995)");
    assert!(toy.text.as_deref().unwrap_or("").contains("Animation, Children's, Comedy"), "{:?}", toy.text);
}

#[test]
fn malformed_lines_are_skipped_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "u.item", b"1|Caf\xe9 (1995)|01-Jan-1995||url|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n2|Short\n");
    write(dir.path(), "u.data", b"1\t1\t5\t100\n1\t2\t5\t101\nbroken line\n2\t1\t4\tnot-a-time\n2\t1\t4\t102\n");
    let imported = import(Format::MovieLens, dir.path()).unwrap();
    let r = &imported.report;
    assert_eq!(r.imported, 2);
    let lines: Vec<String> = r.skipped.iter().map(|s| s.to_string()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[0].ends_with("u.item:2: expected the catalog's field count, found 2 fields"), "{lines:?}");
    assert!(lines[1].ends_with("u.data:2: item `2` is not in the catalog"), "{lines:?}");
    assert!(lines[2].ends_with("u.data:3: expected 4 fields (user, item, rating, timestamp), found 1"), "{lines:?}");
    assert!(lines[3].contains("u.data:4: timestamp `not-a-time` is not a number"), "{lines:?}");
    assert_eq!(imported.dataset.items[0].title, "Café (1995)");
}

#[test]
fn missing_and_empty_sources_are_errors_that_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = import(Format::MovieLens, dir.path()).unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("u.data"), "{err}");
    write(dir.path(), "x.inter", b"user_id:token\titem_id:token\n");
    let err = import(Format::RecBole, dir.path()).unwrap_err().to_string();
    assert!(err.contains("no interactions imported"), "{err}");
    write(dir.path(), "x.inter", b"user_id\titem_id:token\n");
    let err = import(Format::RecBole, dir.path()).unwrap_err().to_string();
    assert!(err.contains("line 1: header field `user_id` is not `name:type`"), "{err}");
}

#[test]
fn seqtext_keeps_line_order_as_time() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "beauty.txt", b"u1 b a c\nu2 c\nu3\n");
    let imported = import(Format::SeqText, &dir.path().join("beauty.txt")).unwrap();
    assert_eq!(imported.report.imported, 4);
    assert_eq!(imported.report.skipped.len(), 1);
    let ds = imported.dataset;
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let titles: Vec<&str> = split.sequence(0).iter().map(|&i| ds.items[i as usize].id.as_str()).collect();
    assert_eq!(titles, ["b", "a", "c"]);
}

/// Regression (issue 19, 17): a UTF-8 byte-order mark became part of the first header (`\u{feff}user_id`), and
/// an invalid byte was named by byte offset only.
#[test]
fn a_byte_order_mark_is_dropped_and_bad_utf8_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bom");
    std::fs::create_dir(&src).unwrap();
    let mut inter = "\u{feff}user_id:token\titem_id:token\ttimestamp:float\n".to_string();
    for u in 0..3 {
        for t in 0..4 {
            inter += &format!("u{u}\ti{t}\t{t}\n");
        }
    }
    write(&src, "bom.inter", inter.as_bytes());
    let r = import(Format::RecBole, &src).unwrap().report;
    assert_eq!((r.imported, r.skipped.len()), (12, 0));
    let mut bad = inter.into_bytes();
    let second_line = bad.iter().position(|&b| b == b'\n').unwrap() + 3;
    bad[second_line] = 0xff;
    write(&src, "bom.inter", &bad);
    let err = import(Format::RecBole, &src).unwrap_err().to_string();
    assert!(err.contains("line 2, column 3") && err.contains("bom.inter"), "{err}");
}

/// Regression (issue 19, 15): empty, blank and NUL-holding ids were imported, then refused by the service.
#[test]
fn empty_blank_and_control_character_ids_are_skipped_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ids");
    std::fs::create_dir(&src).unwrap();
    let mut inter = "user_id:token\titem_id:token\n".to_string();
    for u in 0..2 {
        for t in 0..4 {
            inter += &format!("u{u}\ti{t}\n");
        }
    }
    inter += "\ti1\n  \ti1\nu0\ti\u{0}x\nu\u{7}\ti2\n";
    write(&src, "ids.inter", inter.as_bytes());
    let r = import(Format::RecBole, &src).unwrap().report;
    assert_eq!(r.imported, 8);
    let lines: Vec<(usize, &str)> = r.skipped.iter().map(|s| (s.line, s.reason.as_str())).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!((lines[0].0, lines[0].1), (10, "user empty id"));
    assert_eq!((lines[1].0, lines[1].1), (11, "user blank id"));
    assert!(lines[2].0 == 12 && lines[2].1.starts_with("item id") && lines[2].1.contains("control"), "{lines:?}");
    assert!(lines[3].0 == 13 && lines[3].1.starts_with("user id"), "{lines:?}");
}

/// Regression (issue 19, 14): a user on two lines got an interleaved sequence (i1 i3 i2 i4).
#[test]
fn seqtext_continues_a_user_across_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.txt", b"u1 i1 i2\nu2 x y\nu1 i3 i4\n");
    let ds = import(Format::SeqText, &dir.path().join("s.txt")).unwrap().dataset;
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let u1 = ds.user_idx("u1").unwrap() as usize;
    let ids: Vec<&str> = split.sequence(u1).iter().map(|&i| ds.items[i as usize].id.as_str()).collect();
    assert_eq!(ids, ["i1", "i2", "i3", "i4"]);
}

#[test]
fn datasets_round_trip_and_reject_other_versions() {
    let imported = import(Format::RecBole, &fixture("demo")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    imported.dataset.save(&out).unwrap();
    let back = Dataset::load(&out).unwrap();
    assert_eq!(back, imported.dataset);
    assert_eq!(back.meta().domains, ["books", "films", "music"]);
    // A newer format version is refused with the fix.
    let meta = std::fs::read_to_string(out.join("dataset.json"))
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 9");
    std::fs::write(out.join("dataset.json"), meta).unwrap();
    let err = Dataset::load(&out).unwrap_err().to_string();
    assert!(err.contains("format_version 9") && err.contains("re-import"), "{err}");
    // A truncated table is an error naming the file, not a panic.
    imported.dataset.save(&out).unwrap();
    std::fs::write(out.join("items.parquet"), b"PAR1garbage").unwrap();
    let err = Dataset::load(&out).unwrap_err().to_string();
    assert!(err.contains("items.parquet"), "{err}");
}

/// RecBole orders by float32-normalised timestamps; our split orders by the exact integers. Both are stable sorts over
/// file order. This test checks that (1) the split equals RecBole's reference except where float32 rounding merged
/// distinct seconds, and (2) ordering by RecBole's own float32 key reproduces the reference exactly for every user.
#[test]
fn split_matches_recbole_leave_one_out() {
    let ds = import(Format::MovieLens, &shared_data("ml-100k")).unwrap().dataset;
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let order = std::fs::read_to_string(shared_data("ml-100k/recbole-split/ml-100k_recbole_order.tsv")).unwrap();
    // Per-user (timestamp, item) in file order, for the float32 re-sort.
    let mut per_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); ds.n_users()];
    for ((&u, &i), &t) in ds.interactions.user.iter().zip(&ds.interactions.item).zip(&ds.interactions.timestamp) {
        per_user[u as usize].push((t, i));
    }
    let (mut test_diff, mut valid_diff, mut users) = (0, 0, 0);
    for line in order.lines().skip(1) {
        let mut f = line.split('\t');
        let user = f.next().unwrap();
        let reference: Vec<&str> = f.next().unwrap().split(' ').collect();
        let u = ds.user_idx(user).unwrap() as usize;
        let ours: Vec<&str> = split.sequence(u).iter().map(|&i| ds.items[i as usize].id.as_str()).collect();
        users += 1;
        let n = ours.len();
        assert_eq!(n, reference.len(), "user {user}");
        test_diff += usize::from(ours[n - 1] != reference[n - 1]);
        valid_diff += usize::from(ours[n - 2] != reference[n - 2]);
        let mut f32_order = per_user[u].clone();
        f32_order.sort_by(|a, b| {
            let key = |t: i64| ((t - 874_724_710) as f64 / 18_561_928.0) as f32;
            key(a.0).total_cmp(&key(b.0))
        });
        let f32_ids: Vec<&str> = f32_order.iter().map(|&(_, i)| ds.items[i as usize].id.as_str()).collect();
        assert_eq!(f32_ids, reference, "user {user}: RecBole's float32 key must reproduce its order");
    }
    assert_eq!(users, 943);
    assert_eq!((test_diff, valid_diff), (4, 5), "differences beyond the documented float32 merges");
}

#[test]
fn the_committed_demo_fixture_is_what_the_generator_writes() {
    let (inter, items) = synth::generate(&synth::SynthConfig::demo());
    let stale = "fixtures/demo is stale: regenerate it with `cargo run -p m6rec-cli -- synth --out fixtures/demo`";
    assert!(std::fs::read_to_string(fixture("demo/demo.inter")).unwrap() == inter, "{stale}");
    assert!(std::fs::read_to_string(fixture("demo/demo.item")).unwrap() == items, "{stale}");
}

/// UniSRec rows rebuild full sequences: train rows are listed latest first and histories are cut to 50 items, yet
/// the split's validation and test targets are the files' own.
#[test]
fn unisrec_rows_rebuild_sequences_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "Toy.text", "item_id:token\ttext:token_seq\nA1\tRed Jack. Tools Jacks. Acme. \nB2\tBlue Cup. Lab. Acme. \nC3\tScale. Lab. \nD4\tTape. Tools. \n".as_bytes());
    write(d, "Toy.item2index", b"A1\t0\nB2\t1\nC3\t2\nD4\t3\n");
    write(d, "Toy.user2index", b"u9\t0\nu7\t1\n");
    // User 0: 0 1 2 3 0 2 (train targets 1, 2, 3 listed latest first), valid 0, test 2. User 1: 3 2 1 0 1.
    write(
        d,
        "Toy.train.inter",
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t3\n0\t0 1\t2\n0\t0\t1\n1\t3 2\t1\n1\t3\t2\nbad line\n",
    );
    write(d, "Toy.valid.inter", b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 2 3\t0\n1\t3 2 1\t0\n");
    write(d, "Toy.test.inter", b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t2 3 0\t2\n1\t2 1 0\t1\n");
    let imported = import(Format::UniSRec, d).unwrap();
    let (ds, r) = (imported.dataset, imported.report);
    assert_eq!((r.imported, r.n_users, r.n_items, r.skipped.len()), (11, 2, 4, 1));
    assert_eq!(ds.name, "Toy");
    assert_eq!(ds.items[0].title, "Red Jack");
    assert_eq!(ds.items[1].domain, "toy");
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    let u0 = ds.user_idx("u9").unwrap() as usize;
    assert_eq!(split.sequence(u0), &[0, 1, 2, 3, 0, 2]);
    assert_eq!(split.valid(u0).map(|t| t.item), Some(0));
    assert_eq!(split.test(u0).map(|t| t.item), Some(2));
    assert_eq!(split.sequence(ds.user_idx("u7").unwrap() as usize), &[3, 2, 1, 0, 1]);
    let err = import(Format::UniSRec, dir.path().join("nothing").as_path()).unwrap_err();
    assert!(err.to_string().contains("nothing"), "{err}");
}

/// Regression (issue 19, 8): an index far beyond the file's size panicked (overflow, capacity) or tried a 24 GB
/// allocation; it is a skipped, reported line now.
#[test]
fn unisrec_index_values_beyond_the_file_are_bad_lines_not_allocations() {
    for huge in ["18446744073709551615", "1000000000000000000", "1000000000"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "Toy.text", b"item_id:token\ttext:token_seq\nA1\tRed Jack. \nB2\tBlue Cup. \n");
        write(d, "Toy.item2index", format!("A1\t0\nB2\t{huge}\n").as_bytes());
        write(d, "Toy.user2index", b"u9\t0\n");
        let rows = b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0\t0\n";
        for f in ["Toy.train.inter", "Toy.valid.inter", "Toy.test.inter"] {
            write(d, f, rows);
        }
        let r = import(Format::UniSRec, d).unwrap().report;
        assert_eq!(r.n_items, 1, "{huge}");
        let bad = r.skipped.iter().find(|s| s.file.ends_with("Toy.item2index")).expect("the line is reported");
        assert_eq!(bad.line, 2);
        assert!(bad.reason.contains(huge) && bad.reason.contains("out of range"), "{}", bad.reason);
        // With the line fixed the same folder imports both items.
        write(d, "Toy.item2index", b"A1\t0\nB2\t1\n");
        assert_eq!(import(Format::UniSRec, d).unwrap().report.n_items, 2);
    }
}

#[test]
fn amazon_scientific_imports_every_interaction_with_the_files_targets() {
    let src = shared_data("amazon-scientific");
    let ds = import(Format::UniSRec, &src).unwrap().dataset;
    assert_eq!((ds.interactions.len(), ds.n_users(), ds.n_items()), (59_427, 8_442, 4_385));
    let split = Split::leave_one_out(&ds.interactions, ds.n_users());
    // Every test row of the file is the split's test target, with the same (truncated) history.
    let text = std::fs::read_to_string(src.join("Scientific.test.inter")).unwrap();
    let index = std::fs::read_to_string(src.join("Scientific.user2index")).unwrap();
    let users: Vec<&str> = index.lines().map(|l| l.split('\t').next().unwrap()).collect();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let u = ds.user_idx(users[f[0].parse::<usize>().unwrap()]).unwrap() as usize;
        let t = split.test(u).unwrap();
        assert_eq!(t.item, f[2].parse::<u32>().unwrap());
        let hist: Vec<u32> = f[1].split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(&t.history[t.history.len() - hist.len()..], hist.as_slice());
    }
}

#[test]
fn item_text_joins_by_id_from_csv_with_quotes_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "demo.inter", b"user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\t2\n");
    write(dir.path(), "demo.item", b"item_id:token\ttitle:token_seq\ni1\tOne\ni2\tTwo\n");
    let mut ds = import(Format::RecBole, dir.path()).unwrap().dataset;
    let csv = dir.path().join("plots.csv");
    write(
        dir.path(),
        "plots.csv",
        b"id,plot\r\ni1,\"A plot, with a comma and \"\"quotes\"\"\"\r\ni1,\"A plot, with a comma and \"\"quotes\"\"\"\r\ni9,unknown\r\ni2,\r\n",
    );
    let r = m6rec_data::import::join_text(&mut ds, &csv, "id", "plot").unwrap();
    assert_eq!((r.joined, r.n_unknown, r.empty), (1, 1, 1));
    assert!(r.unknown[0].contains("i9"));
    assert_eq!(ds.items[0].text.as_deref(), Some("A plot, with a comma and \"quotes\""));
    assert_eq!(ds.items[1].text, None);
    let err = m6rec_data::import::join_text(&mut ds, &csv, "movie_id", "plot").unwrap_err().to_string();
    assert!(err.contains("movie_id") && err.contains("plots.csv"), "{err}");
}
