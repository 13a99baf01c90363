//! Text modality: the pretrained encoder against sentence-transformers' own output, tokenizers, the scratch encoder.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_tensor::Mode;
use m6rec_text::{Error, SubwordModel, TextEncoder, TextEncoderConfig, TextTokenizer};
use proptest::prelude::*;
use tch::{nn, Device, Tensor};

#[derive(serde::Deserialize)]
struct Golden {
    max_seq_length: usize,
    sentences: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(m6rec_testkit::fixture("golden/minilm.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let g = golden();
    let vs = nn::VarStore::new(Device::Cpu);
    let enc =
        TextEncoder::new(&vs.root(), &TextEncoderConfig::pretrained(m6rec_testkit::text_model()), &[""; 0]).unwrap();
    assert_eq!(enc.dim(), 384);
    // Same tokens as the reference tokenizer, truncation included (the last sentence is longer than 256 tokens).
    let batch = enc.tokenizer().encode_batch(&g.sentences).unwrap();
    for (row, want) in g.token_ids.iter().enumerate() {
        let got: Vec<u32> =
            batch.ids[row * batch.len..][..want.len()].iter().map(|&i| u32::try_from(i).unwrap()).collect();
        assert_eq!(&got, want, "tokens of sentence {row}");
        assert_eq!(batch.mask[row * batch.len..][..batch.len].iter().sum::<i64>() as usize, want.len());
    }
    assert_eq!(batch.len, g.max_seq_length, "the long sentence is truncated to max_seq_length");
    let emb = tch::no_grad(|| enc.encode(&g.sentences, Device::Cpu, Mode::Eval)).unwrap();
    let want = Tensor::from_slice2(&g.embeddings);
    let max_diff = (&emb - &want).abs().max().double_value(&[]);
    eprintln!("max |ours - sentence-transformers| = {max_diff:.2e}");
    assert!(max_diff < 1e-4, "max |ours - sentence-transformers| = {max_diff}");
    // Batched by length, rows in input order, same values.
    let all = tch::no_grad(|| enc.encode_all(&g.sentences, 2, Device::Cpu, Mode::Eval)).unwrap();
    assert!((&all - &want).abs().max().double_value(&[]) < 1e-4);
    // sentence-transformers' model ends with Normalize: unit rows.
    let norms = emb.norm_scalaropt_dim(2.0, [1], false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn pretrained_is_frozen_by_default_and_errors_name_the_file() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _enc =
        TextEncoder::new(&vs.root(), &TextEncoderConfig::pretrained(m6rec_testkit::text_model()), &[""; 0]).unwrap();
    assert!(vs.trainable_variables().iter().all(|t| !t.requires_grad()), "frozen encoder has no trainable weights");

    let empty = tempfile::tempdir().unwrap();
    let err = TextEncoder::new(&vs.root(), &TextEncoderConfig::pretrained(empty.path()), &[""; 0]).unwrap_err();
    assert!(matches!(err, Error::MissingFile { file: "config.json", .. }), "{err}");

    // A folder whose weights do not fit its config: the error names the weight.
    let dir = tempfile::tempdir().unwrap();
    let src = m6rec_testkit::text_model();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 7");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let err = TextEncoder::new(&vs.root(), &TextEncoderConfig::pretrained(dir.path()), &[""; 0]).unwrap_err();
    assert!(err.to_string().contains("encoder.layer.6"), "{err}");
}

const CORPUS: [&str; 6] = [
    "a quiet film about the sea and the whales",
    "a loud film about cars and racing",
    "the sea the sea the sea",
    "digital multimeter for the electronics lab",
    "oscilloscope probes for the electronics lab",
    "racing cars, loud engines, fast cars",
];

#[test]
fn trained_tokenizers_save_and_reload() {
    for model in [SubwordModel::WordPiece, SubwordModel::Bpe] {
        let tok = TextTokenizer::train(CORPUS.iter(), model, 200, 32).unwrap();
        assert!(tok.vocab_size() <= 200 && tok.vocab_size() > 10, "{model:?}: {}", tok.vocab_size());
        assert_eq!(tok.pad_id(), 0, "[PAD] is id 0");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = TextTokenizer::from_file(&path, 32).unwrap();
        let (a, b) = (tok.encode_batch(&CORPUS).unwrap(), back.encode_batch(&CORPUS).unwrap());
        assert_eq!(a, b, "{model:?}: reloaded tokenizer encodes the same");
        // [CLS] first, [SEP] last, lower-cased words known.
        assert_eq!(a.ids[0], i64::from(tok.inner().token_to_id("[CLS]").unwrap()));
        assert!(a.ids.iter().all(|&i| i >= 0 && (i as usize) < tok.vocab_size()));
    }
    let err = TextTokenizer::from_file(std::path::Path::new("/nonexistent/tokenizer.json"), 32).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tokenizer.json"), "{err}");
}

fn scratch_encoder(vs: &nn::VarStore) -> TextEncoder {
    let cfg = TextEncoderConfig::Scratch {
        d_model: 16,
        n_layers: 1,
        n_heads: 2,
        max_len: 24,
        dropout: 0.0,
        vocab_size: 120,
        subword: SubwordModel::WordPiece,
    };
    TextEncoder::new(&vs.root(), &cfg, &CORPUS).unwrap()
}

#[test]
fn scratch_encoder_learns_to_separate_topics() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = scratch_encoder(&vs);
    assert!(!vs.trainable_variables().is_empty());
    // Pull texts of one topic together and push topics apart (a contrastive loss over the two topics).
    let texts = ["the sea and the whales", "whales in the sea", "racing cars", "loud cars racing"];
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Adam::default(), &vs, 1e-2).unwrap();
    let sim = |emb: &Tensor| {
        let e = m6rec_text::bert::l2_normalize(emb);
        e.matmul(&e.tr())
    };
    let same = labels.unsqueeze(0).eq_tensor(&labels.unsqueeze(1)).to_kind(tch::Kind::Float);
    let other: Tensor = 1.0 - &same;
    let score = |s: &Tensor| ((s * &same).sum(tch::Kind::Float) - (s * &other).sum(tch::Kind::Float)).double_value(&[]);
    let before = score(&sim(&enc.encode(&texts, Device::Cpu, Mode::Eval).unwrap()));
    for _ in 0..60 {
        let s = sim(&enc.encode(&texts, Device::Cpu, Mode::Train).unwrap());
        let loss = (&s * &other).mean(tch::Kind::Float) - (&s * &same).mean(tch::Kind::Float);
        opt.backward_step(&loss);
    }
    let after = score(&sim(&enc.encode(&texts, Device::Cpu, Mode::Eval).unwrap()));
    assert!(after > before + 1.0, "within-topic minus across-topic similarity: {before} -> {after}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    /// Padding never leaks: a text's embedding is the same alone and in a batch with longer texts.
    #[test]
    fn padding_does_not_change_embeddings(words in proptest::collection::vec(0usize..CORPUS.len(), 1..4)) {
        let vs = nn::VarStore::new(Device::Cpu);
        let enc = scratch_encoder(&vs);
        let short = CORPUS[words[0]].split(' ').take(2).collect::<Vec<_>>().join(" ");
        let long: Vec<String> = words.iter().map(|&w| CORPUS[w].repeat(2)).collect();
        let alone = enc.encode(std::slice::from_ref(&short), Device::Cpu, Mode::Eval).unwrap();
        let mut batch = long.clone();
        batch.insert(0, short);
        let together = enc.encode(&batch, Device::Cpu, Mode::Eval).unwrap().get(0).unsqueeze(0);
        let diff = (alone - together).abs().max().double_value(&[]);
        prop_assert!(diff < 1e-5, "padding changed the embedding by {}", diff);
    }
}
