//! Opening a checkpoint together with the dataset and feature cache it reads, ready to score: what `m6rec eval`,
//! `m6rec recommend` and `m6rec serve` share.

use crate::content::{center_rows, ItemContent, Modality, ModalityName};
use crate::saved::{self, DatasetFingerprint};
use crate::{Error, Recommender, RecommenderConfig, Result};
use m6rec_data::Dataset;
use std::path::Path;
use tch::Device;

/// Every item's content for a run with `[item_tower]`, read from the feature cache of dataset `data` (`features`,
/// or the default cache beside it), in the modalities and order that `run`'s `[content]` names.
pub fn item_content(
    data: &Path,
    features: Option<&Path>,
    ds: &Dataset,
    run: &RecommenderConfig,
) -> Result<ItemContent> {
    let cache = features.map(Path::to_path_buf).unwrap_or_else(|| m6rec_features::default_cache_dir(data));
    let feats = m6rec_features::Features::load(&cache, ds)?;
    let all: Vec<u32> = (0..u32::try_from(ds.n_items())
        .map_err(|_| Error::Content(format!("{} items do not fit 32-bit item indices", ds.n_items())))?)
        .collect();
    let content = run.content();
    let mut modalities = Vec::new();
    let mut columns = Vec::new();
    for name in content.modalities {
        let missing = |what: &str, flag: &str| {
            Error::Content(format!(
                "{} has no {what}, and [content] modalities names {:?}: run `m6rec features {} {flag}` (or drop it from the list)",
                cache.display(),
                name.as_str(),
                data.display()
            ))
        };
        match name {
            ModalityName::Text => {
                if feats.config.text.is_none() {
                    return Err(missing("text embeddings", "--text-model .m6rec/models/all-MiniLM-L6-v2"));
                }
                let text = feats.texts(&all)?;
                modalities.push(Modality::Vectors(if content.center_text {
                    center_rows(&text, &feats.present.select(1, m6rec_features::TEXT))
                } else {
                    text
                }));
                columns.push(m6rec_features::TEXT);
            }
            ModalityName::Image => {
                if feats.image_row.iter().all(|&r| r < 0) {
                    return Err(missing("decoded images", "(after `m6rec import ... --images DIR`)"));
                }
                let c = &feats.config.image;
                modalities.push(Modality::Images {
                    pixels: feats.pixels.shallow_clone(),
                    row_of: feats.image_row.clone(),
                    mean: c.mean.map(f64::from),
                    std: c.std.map(f64::from),
                });
                columns.push(m6rec_features::IMAGE);
            }
            ModalityName::Audio => {
                if feats.audio_row.iter().all(|&r| r < 0) {
                    return Err(missing("decoded audio", "(after `m6rec import ... --audio DIR`)"));
                }
                modalities
                    .push(Modality::Audio { log_mel: feats.log_mel.shallow_clone(), row_of: feats.audio_row.clone() });
                columns.push(m6rec_features::AUDIO);
            }
        }
    }
    let present = feats.present.index_select(1, &tch::Tensor::from_slice(&columns));
    ItemContent::from_modalities(modalities, present, ds.n_items())
}

/// Checkpoint `ckpt` trained on the dataset in `data` (refusing a checkpoint of another catalog), on `device`, with
/// its item tower's content and its items' domains in place.
pub fn open_model(device: Device, data: &Path, ckpt: &Path, features: Option<&Path>) -> Result<(Dataset, Recommender)> {
    let ds = Dataset::load(data)?;
    let run = saved::read_config(ckpt)?.run;
    let content = match run.item_tower {
        Some(_) => Some(item_content(data, features, &ds, &run)?),
        None => None,
    };
    let mut loaded = Recommender::load(ckpt, device, content.as_ref())?;
    loaded.set_item_domains(&ds.items.iter().map(|it| it.domain.as_str()).collect::<Vec<_>>());
    loaded.config.dataset.check(&DatasetFingerprint::of(&ds), ckpt)?;
    Ok((ds, loaded))
}

/// Checkpoint `ckpt`, pretrained on another catalog, reading the items of the dataset in `data` through its content
/// tower (zero-shot transfer; see [`Recommender::load_zero_shot`]).
pub fn open_zero_shot(
    device: Device,
    data: &Path,
    ckpt: &Path,
    features: Option<&Path>,
) -> Result<(Dataset, Recommender)> {
    let ds = Dataset::load(data)?;
    let config = saved::read_config(ckpt)?;
    let content = item_content(data, features, &ds, &config.run)?;
    let mut loaded = Recommender::load_zero_shot(ckpt, device, &content)?;
    loaded.set_item_domains(&ds.items.iter().map(|it| it.domain.as_str()).collect::<Vec<_>>());
    Ok((ds, loaded))
}
