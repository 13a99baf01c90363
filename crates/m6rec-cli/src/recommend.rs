//! `m6rec recommend`: top-k items for a user of the dataset or for a history given by item ids.

use crate::common::load_dataset;
use crate::eval::open_model;
use anyhow::{bail, Context, Result};
use clap::Args;
use m6rec_data::{Dataset, Split};
use m6rec_train::recommend;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Dataset directory (for the catalog and known users' histories).
    #[arg(long)]
    data: PathBuf,
    /// A known user's id: recommend after their whole history.
    #[arg(long, conflicts_with_all = ["history", "first"], required_unless_present_any = ["history", "first"])]
    user: Option<String>,
    /// Recommend for the first N users of the dataset (a quick look).
    #[arg(long, conflicts_with = "history")]
    first: Option<usize>,
    /// A new user's history: comma-separated item ids, oldest first.
    #[arg(long, value_delimiter = ',')]
    history: Option<Vec<String>>,
    /// How many items.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Allow items already in the history.
    #[arg(long)]
    include_seen: bool,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Feature cache for checkpoints with an item tower (default `<data>.features`).
    #[arg(long)]
    features: Option<PathBuf>,
}

pub fn recommend(a: &RecommendArgs) -> Result<()> {
    if m6rec_train::generative::Generative::is_checkpoint(&a.checkpoint) {
        let ds = load_dataset(&a.data)?;
        let g = m6rec_train::generative::Generative::load(&a.checkpoint, m6rec_tensor::device::parse(&a.device)?)
            .with_context(|| format!("loading {}", a.checkpoint.display()))?;
        if g.n_items() < ds.n_items() {
            bail!(
                "{} has semantic IDs for {} items, the dataset {}",
                a.checkpoint.display(),
                g.n_items(),
                ds.n_items()
            );
        }
        // Seen items are dropped after the search: a wider beam keeps k left.
        let beam = g.config().generative.as_ref().map_or(20, |c| c.beam).max(2 * a.k);
        return recommend_with(&ds, &g.scorer().with_beam(beam), a);
    }
    let (_device, ds, loaded) = open_model(&a.device, &a.data, &a.checkpoint, a.features.as_deref())?;
    recommend_with(&ds, &loaded.scorer()?, a)
}

fn recommend_with(ds: &Dataset, scorer: &dyn m6rec_train::Scorer, a: &RecommendArgs) -> Result<()> {
    if let Some(n) = a.first {
        let split = Split::leave_one_out(&ds.interactions, ds.n_users());
        for u in 0..n.min(ds.n_users()) {
            show(ds, scorer, &format!("user {}", ds.users[u]), split.sequence(u), a)?;
        }
        return Ok(());
    }
    let history: Vec<u32> = match (&a.user, &a.history) {
        (Some(user), _) => {
            let u = ds.user_idx(user)?;
            let split = Split::leave_one_out(&ds.interactions, ds.n_users());
            split.sequence(u as usize).to_vec()
        }
        (None, Some(items)) => {
            let index = ds.item_index();
            items
                .iter()
                .map(|id| {
                    index.get(id.trim()).copied().ok_or_else(|| m6rec_data::Error::UnknownItem(id.trim().to_string()))
                })
                .collect::<Result<_, _>>()
                .context("reading --history")?
        }
        (None, None) => bail!("give --user ID or --history ITEM,ITEM,..."),
    };
    let who = a.user.as_ref().map(|u| format!("user {u}")).unwrap_or_else(|| "the given history".into());
    show(ds, scorer, &who, &history, a)
}

fn show(ds: &Dataset, scorer: &dyn m6rec_train::Scorer, who: &str, history: &[u32], a: &RecommendArgs) -> Result<()> {
    let recs = recommend::recommend(scorer, history, a.k, !a.include_seen)?;
    let last: Vec<&str> = history.iter().rev().take(3).map(|&i| ds.items[i as usize].title.as_str()).collect();
    println!("top {} for {who} ({} items, most recent first: {}):", recs.len(), history.len(), last.join(" | "));
    for (rank, r) in recs.iter().enumerate() {
        let it = &ds.items[r.item as usize];
        println!("{:>3}. {:<10} {:>8.3}  {}  [{}]", rank + 1, it.id, r.score, it.title, it.domain);
    }
    Ok(())
}
