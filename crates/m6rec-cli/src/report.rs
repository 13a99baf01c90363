//! `m6rec report RUN -o report.html`: one self-contained HTML file about a run (no network at view time: styles
//! inline, the training curves as inline SVG, item images as data URIs): the dataset profile, the run's config, the
//! training curves and state, the test metrics against popularity, and example recommendations with titles and
//! thumbnails.
//!
//! RUN is a folder written by `m6rec run` (`run.json` names its dataset, model and metrics), or any folder holding
//! `model/` with `--data` naming the dataset.

use crate::eval::open_model;
use anyhow::{Context, Result};
use clap::Args;
use m6rec_data::{Dataset, Split};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder (from `m6rec run`).
    run: PathBuf,
    /// The HTML file to write (default: RUN/report.html).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// The dataset (default: from RUN/run.json, else RUN/data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Users shown with example recommendations.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=50))]
    examples: u16,
}

/// What `m6rec run` records about its run, for the report.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub data: PathBuf,
    pub model: PathBuf,
    pub metrics: PathBuf,
    pub chart: PathBuf,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let record: Option<RunRecord> =
        std::fs::read(a.run.join("run.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let data = a.data.clone().or_else(|| record.as_ref().map(|r| r.data.clone())).unwrap_or_else(|| a.run.join("data"));
    let model = record.as_ref().map(|r| r.model.clone()).unwrap_or_else(|| a.run.join("model"));
    let metrics = record.as_ref().map(|r| r.metrics.clone()).unwrap_or_else(|| a.run.join("metrics.json"));
    let out = a.out.clone().unwrap_or_else(|| a.run.join("report.html"));
    let (_device, ds, loaded) = open_model("cpu", &data, &model, None)?;
    let run = m6rec_train::checkpoint::load_config(&model).with_context(|| format!("loading {}", model.display()))?.run;
    let split = run.split(&ds.interactions, ds.n_users(), ds.n_items());
    let mut html = String::new();
    let title = format!("m6rec report: {}", ds.name);
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        esc(&title),
        esc(&title)
    );
    profile(&mut html, &ds);
    let _ = write!(html, "<h2>Run configuration</h2><p>split: {}</p>", esc(&split.describe()));
    if let Some(decisions) = decisions(&a.run.join("train.log")) {
        let _ =
            write!(html, "<h3>Decisions of the automatic strategy</h3><pre id=\"decisions\">{}</pre>", esc(&decisions));
    }
    let cfg = serde_json::to_string_pretty(&run).unwrap_or_default();
    let _ = write!(html, "<pre id=\"config\">{}</pre>", esc(&cfg));
    training(&mut html, &model);
    test_metrics(&mut html, &metrics)?;
    let scorer = loaded.scorer()?;
    examples(&mut html, &ds, &data, &split, &scorer, usize::from(a.examples))?;
    html.push_str("</body></html>\n");
    m6rec_tensor::atomic::write_bytes(&out, html.as_bytes()).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The automatic strategy's table from the training log `m6rec run` keeps, if it is there.
fn decisions(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let start = text.find("automatic strategy")?;
    let rest = &text[start..];
    let end = rest
        .find("(* set in the run config")
        .map_or(rest.len(), |e| rest[e..].find('\n').map_or(rest.len(), |n| e + n));
    Some(rest[..end].to_string())
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}\
.bar{background:#4a7;height:12px;display:inline-block}pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:30em}\
img.t{height:64px;vertical-align:middle;margin-right:6px}";

fn profile(html: &mut String, ds: &Dataset) {
    let mut lens = vec![0usize; ds.n_users()];
    let mut pop = vec![0usize; ds.n_items()];
    for (&u, &i) in ds.interactions.user.iter().zip(&ds.interactions.item) {
        lens[u as usize] += 1;
        pop[i as usize] += 1;
    }
    let n = ds.interactions.len().max(1);
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    let q = |f: f64| sorted.get(((sorted.len() as f64 - 1.0) * f).round() as usize).copied().unwrap_or(0);
    let with = |f: &dyn Fn(&m6rec_data::Item) -> bool| ds.items.iter().filter(|it| f(it)).count();
    let pct = |k: usize| 100.0 * k as f64 / ds.n_items().max(1) as f64;
    let (text, image, audio) =
        (with(&|it| it.text.is_some()), with(&|it| it.image.is_some()), with(&|it| it.audio.is_some()));
    let _ = write!(
        html,
        "<h2>Dataset</h2><table id=\"profile\"><tr><th class=l>users</th><td>{}</td></tr><tr><th class=l>items</th><td>{}</td></tr>\
         <tr><th class=l>interactions</th><td>{}</td></tr><tr><th class=l>history length: mean / median / p90 / max</th>\
         <td>{:.1} / {} / {} / {}</td></tr><tr><th class=l>items with text / image / audio</th><td>{:.0}% / {:.0}% / {:.0}%</td></tr></table>",
        ds.n_users(),
        ds.n_items(),
        ds.interactions.len(),
        n as f64 / ds.n_users().max(1) as f64,
        q(0.5),
        q(0.9),
        sorted.last().copied().unwrap_or(0),
        pct(text),
        pct(image),
        pct(audio)
    );
    let bins = [(1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, 99), (100, usize::MAX)];
    html.push_str("<h3>History lengths</h3><table><tr><th>events per user</th><th>users</th><th class=l></th></tr>");
    let most =
        bins.iter().map(|&(lo, hi)| lens.iter().filter(|&&l| l >= lo && l <= hi).count()).max().unwrap_or(1).max(1);
    for (lo, hi) in bins {
        let c = lens.iter().filter(|&&l| l >= lo && l <= hi).count();
        let label = if hi == usize::MAX {
            format!("{lo}+")
        } else if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        let _ = write!(
            html,
            "<tr><td>{label}</td><td>{c}</td><td class=l><span class=bar style=\"width:{}px\"></span></td></tr>",
            300 * c / most
        );
    }
    html.push_str("</table>");
    pop.sort_unstable_by(|a, b| b.cmp(a));
    let share = |f: f64| {
        let k = ((pop.len() as f64 * f).ceil() as usize).max(1);
        100.0 * pop.iter().take(k).sum::<usize>() as f64 / n as f64
    };
    let rare = pop.iter().filter(|&&c| c < 5).count();
    let _ = write!(
        html,
        "<h3>Item popularity</h3><p>the top 1% of items hold {:.1}% of the interactions, the top 10% {:.1}%; {rare} items ({:.0}%) have fewer than 5.</p>",
        share(0.01),
        share(0.1),
        pct(rare)
    );
}

fn training(html: &mut String, model: &Path) {
    html.push_str("<h2>Training</h2>");
    if let Ok(state) = std::fs::read(model.join("state.json")) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&state) {
            let _ = write!(
                html,
                "<p id=\"state\">{} epochs, best validation NDCG@10 {:.4} at epoch {}, {:.0} s</p>",
                v["epoch"],
                v["best_ndcg10"].as_f64().unwrap_or(f64::NAN),
                v["best_epoch"],
                v["elapsed"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    match std::fs::read_to_string(model.join("curves.svg")) {
        Ok(svg) => {
            let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
            html.push_str(body);
        }
        Err(_) => html.push_str("<p>(no curves.svg in the checkpoint)</p>"),
    }
}

fn test_metrics(html: &mut String, path: &Path) -> Result<()> {
    html.push_str("<h2>Test metrics (full ranking over the catalog)</h2>");
    let Ok(bytes) = std::fs::read(path) else {
        let _ = write!(html, "<p>no metrics at {} (run `m6rec eval --json`)</p>", esc(&path.display().to_string()));
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let Some(rows) = v.as_object() else { return Ok(()) };
    let mut keys: Vec<String> = rows
        .values()
        .filter_map(|m| m.as_object())
        .flat_map(|m| m.iter().filter(|(_, x)| x.is_f64()).map(|(k, _)| k.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    html.push_str("<table id=\"metrics\"><tr><th class=l>scorer</th>");
    for k in &keys {
        let _ = write!(html, "<th>{}</th>", esc(k));
    }
    html.push_str("</tr>");
    for (name, m) in rows {
        let _ = write!(html, "<tr><td class=l>{}</td>", esc(name));
        for k in &keys {
            match m[k.as_str()].as_f64() {
                Some(x) => {
                    let _ = write!(html, "<td>{x:.4}</td>");
                }
                None => html.push_str("<td></td>"),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    Ok(())
}

/// An item's image as a data URI (at most 512 KiB; larger or unreadable: none).
fn thumbnail(data: &Path, item: &m6rec_data::Item) -> Option<String> {
    use base64::Engine;
    let rel = item.image.as_deref()?;
    let path = m6rec_data::media::resolve(data, rel).ok()?;
    let bytes = std::fs::read(&path).ok().filter(|b| b.len() <= 512 << 10)?;
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        _ => return None,
    };
    Some(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

fn item_cell(data: &Path, item: &m6rec_data::Item) -> String {
    let img = thumbnail(data, item).map(|uri| format!("<img class=t alt=\"\" src=\"{uri}\">")).unwrap_or_default();
    format!("<td class=l>{img}{} <small>({})</small></td>", esc(&item.title), esc(&item.id))
}

fn examples(
    html: &mut String,
    ds: &Dataset,
    data: &Path,
    split: &Split,
    scorer: &dyn m6rec_train::Scorer,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    html.push_str("<h2>Example recommendations</h2>");
    let users = (0..split.n_users()).filter_map(|u| split.test(u).map(|t| (u, t))).take(n);
    for (u, target) in users {
        let recs = m6rec_train::recommend::recommend(scorer, target.history, 10, true)?;
        let _ = write!(html, "<h3>user {}</h3><table><tr><th class=l>recent history</th></tr>", esc(&ds.users[u]));
        for &i in target.history.iter().rev().take(5) {
            let _ = write!(html, "<tr>{}</tr>", item_cell(data, &ds.items[i as usize]));
        }
        html.push_str("</table><table><tr><th>rank</th><th class=l>recommended</th><th>score</th></tr>");
        for (rank, r) in recs.iter().enumerate() {
            let hit = if r.item == target.item { " <b>(the held-out next item)</b>" } else { "" };
            let cell = item_cell(data, &ds.items[r.item as usize]);
            let _ = write!(html, "<tr><td>{}</td>{}<td>{:.3}{hit}</td></tr>", rank + 1, cell, r.score);
        }
        html.push_str("</table>");
    }
    Ok(())
}

/// Writes `record` beside a run.
pub fn write_record(out: &Path, record: &RunRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record)?;
    let path = out.join("run.json");
    m6rec_tensor::atomic::write_bytes(&path, &json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_cells_embed_their_image_and_escape_their_title() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("media/images")).unwrap();
        std::fs::write(tmp.path().join("media/images/a.png"), b"\x89PNG").unwrap();
        let item = m6rec_data::Item {
            id: "a".into(),
            title: "<script>alert(1)</script> & co".into(),
            image: Some("media/images/a.png".into()),
            ..m6rec_data::Item::default()
        };
        let cell = item_cell(tmp.path(), &item);
        assert!(cell.contains("src=\"data:image/png;base64,iVBORw==\""), "{cell}");
        assert!(cell.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"), "{cell}");
        // A path that leaves the dataset is never read.
        let outside = m6rec_data::Item { image: Some("../a.png".into()), ..item };
        assert!(!item_cell(tmp.path(), &outside).contains("<img"));
    }
}
