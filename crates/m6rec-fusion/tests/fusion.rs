//! Fusion modules: absent modalities never leak, shapes are checked, each module can learn.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use m6rec_fusion::{Fusion, FusionConfig};
use m6rec_tensor::Mode;
use proptest::prelude::*;
use tch::{nn, Device, Kind, Tensor};

use m6rec_testkit::torch_rng;

fn all_configs() -> Vec<FusionConfig> {
    vec![
        FusionConfig::Mean,
        FusionConfig::Gated,
        FusionConfig::CrossAttention { n_heads: 2 },
        FusionConfig::ConcatMlp { hidden: None },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Whatever an absent modality's row holds (noise, huge values, NaN), the fused embedding is the same.
    #[test]
    fn absent_modalities_never_leak(seed in 0i64..1000, flags in proptest::collection::vec(any::<bool>(), 15), junk in -1e6f64..1e6) {
        let _rng = torch_rng();
    tch::manual_seed(seed);
        let present = Tensor::from_slice(&flags).view([5, 3]);
        let embs = Tensor::randn([5, 3, 8], (Kind::Float, Device::Cpu));
        let absent = present.logical_not().unsqueeze(-1);
        let poisoned = embs.where_self(&absent.logical_not(), &Tensor::full([5, 3, 8], junk, (Kind::Float, Device::Cpu)));
        let nan = embs.where_self(&absent.logical_not(), &Tensor::full([5, 3, 8], f64::NAN, (Kind::Float, Device::Cpu)));
        for cfg in all_configs() {
            let vs = nn::VarStore::new(Device::Cpu);
            let f = Fusion::new(&vs.root(), &cfg, 3, 8).unwrap();
            let a = f.forward(&embs, &present, Mode::Eval).unwrap();
            let b = f.forward(&poisoned, &present, Mode::Eval).unwrap();
            let c = f.forward(&nan, &present, Mode::Eval).unwrap();
            prop_assert!(a.isfinite().all().int64_value(&[]) == 1, "{:?}: non-finite output", cfg);
            prop_assert!((&a - &b).abs().max().double_value(&[]) < 1e-5, "{:?}: absent values leaked", cfg);
            prop_assert!((&a - &c).abs().max().double_value(&[]) < 1e-5, "{:?}: NaN in an absent row leaked", cfg);
        }
    }
}

#[test]
fn mean_and_gated_by_hand() {
    let embs = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
    let present = Tensor::from_slice(&[true, true, false]).view([1, 3]);
    let vs = nn::VarStore::new(Device::Cpu);
    let mean = Fusion::new(&vs.root(), &FusionConfig::Mean, 3, 2).unwrap();
    let got = mean.forward(&embs, &present, Mode::Eval).unwrap();
    assert!((got - Tensor::from_slice(&[2.0f32, 3.0]).view([1, 2])).abs().max().double_value(&[]) < 1e-6);
    // Gated with one modality present: the weight is 1, the output is that embedding.
    let gated = Fusion::new(&(vs.root() / "g"), &FusionConfig::Gated, 3, 2).unwrap();
    let one = Tensor::from_slice(&[false, true, false]).view([1, 3]);
    let got = gated.forward(&embs, &one, Mode::Eval).unwrap();
    assert!((got - Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2])).abs().max().double_value(&[]) < 1e-6);
    // Nothing present: zeros for mean and gated.
    let none = Tensor::from_slice(&[false, false, false]).view([1, 3]);
    assert_eq!(mean.forward(&embs, &none, Mode::Eval).unwrap().abs().sum(Kind::Float).double_value(&[]), 0.0);
    assert_eq!(gated.forward(&embs, &none, Mode::Eval).unwrap().abs().sum(Kind::Float).double_value(&[]), 0.0);
}

#[test]
fn bad_shapes_and_configs_are_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let f = Fusion::new(&vs.root(), &FusionConfig::Gated, 3, 8).unwrap();
    let embs = Tensor::zeros([2, 3, 8], (Kind::Float, Device::Cpu));
    assert!(f.forward(&embs, &Tensor::ones([2, 2], (Kind::Bool, Device::Cpu)), Mode::Eval).is_err());
    assert!(f
        .forward(
            &Tensor::zeros([2, 3, 4], (Kind::Float, Device::Cpu)),
            &Tensor::ones([2, 3], (Kind::Bool, Device::Cpu)),
            Mode::Eval
        )
        .is_err());
    assert!(Fusion::new(&vs.root(), &FusionConfig::CrossAttention { n_heads: 3 }, 3, 8).is_err());
    assert!(Fusion::new(&vs.root(), &FusionConfig::Mean, 0, 8).is_err());
    // The config is a tagged TOML table.
    let cfg: FusionConfig = toml::from_str("type = \"cross_attention\"\nn_heads = 4").unwrap();
    assert_eq!(cfg, FusionConfig::CrossAttention { n_heads: 4 });
    assert!(toml::from_str::<FusionConfig>("type = \"sum\"").is_err());
}

/// Each learnable module learns to rely on the one informative modality and ignore the noisy ones.
#[test]
fn learnable_modules_learn_which_modality_carries_signal() {
    let _rng = torch_rng();
    for cfg in all_configs().into_iter().skip(1) {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let f = Fusion::new(&vs.root(), &cfg, 3, 8).unwrap();
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, 1e-2).unwrap();
        let batch = || {
            let embs = Tensor::randn([64, 3, 8], (Kind::Float, Device::Cpu));
            let present = Tensor::rand([64, 3], (Kind::Float, Device::Cpu)).ge(0.3);
            let _ = present.select(1, 1).fill_(1); // the informative modality is always there
            let target = embs.select(1, 1);
            (embs, present, target)
        };
        let loss_of =
            |e: &Tensor, p: &Tensor, t: &Tensor, mode| (f.forward(e, p, mode).unwrap() - t).square().mean(Kind::Float);
        let (e, p, t) = batch();
        let before = loss_of(&e, &p, &t, Mode::Eval).double_value(&[]);
        for _ in 0..300 {
            let (e, p, t) = batch();
            opt.backward_step(&loss_of(&e, &p, &t, Mode::Train));
        }
        let after = loss_of(&e, &p, &t, Mode::Eval).double_value(&[]);
        assert!(after < 0.5 * before, "{cfg:?}: loss {before:.3} -> {after:.3}");
    }
}
