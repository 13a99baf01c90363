//! Training curves as SVG: loss and validation NDCG@10 per epoch, side by side.

use crate::state::EpochRecord;
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes `path` (SVG). An empty history writes an empty chart.
pub fn training_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let svg = training_curves_svg(history)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) })?;
    std::fs::write(path, svg).map_err(crate::error::io(path))
}

/// The chart of [`training_curves`] as SVG text.
pub(crate) fn training_curves_svg(history: &[EpochRecord]) -> std::result::Result<String, String> {
    let mut svg = String::new();
    draw_curves(&mut svg, history)?;
    Ok(svg)
}

fn draw_curves(svg: &mut String, history: &[EpochRecord]) -> std::result::Result<(), String> {
    let err = |e: String| e;
    let root = SVGBackend::with_string(svg, (900, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(450);
    let max_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
    let series: [Series<'_>; 2] = [
        ("training loss", history.iter().map(|r| (r.epoch as f64, r.loss)).collect(), BLUE),
        (
            "validation NDCG@10",
            history.iter().filter_map(|r| r.valid_ndcg10.map(|v| (r.epoch as f64, v))).collect(),
            RED,
        ),
    ];
    for ((title, points, color), area) in series.into_iter().zip([left, right]) {
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_epoch, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(|e| err(e.to_string()))?;
        chart.draw_series(LineSeries::new(points, &color)).map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Writes `path` (SVG): one group of bars per metric (HR, NDCG, MRR at 10 and 50), one bar per model.
pub fn metrics_chart(path: &Path, title: &str, rows: &[(&str, &crate::metrics::Metrics)]) -> Result<()> {
    let err = |e: String| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) };
    let keys = ["hr@10", "ndcg@10", "mrr@10", "hr@50", "ndcg@50", "mrr@50"];
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    let top = rows
        .iter()
        .flat_map(|(_, m)| keys.iter().map(|k| m.values.get(*k).copied().unwrap_or(0.0)))
        .fold(0.0, f64::max);
    let root = SVGBackend::new(path, (900, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let n_rows = rows.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..keys.len() as f64 - 0.5, 0f64..(top * 1.15).max(1e-3))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(keys.len())
        .x_label_formatter(&|x| {
            // Groups are centred on integers: label those, nothing in between.
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                keys.get(i as usize).map(|k| k.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (r, (label, m)) in rows.iter().enumerate() {
        let color = colors[r % colors.len()];
        let bars = keys.iter().enumerate().map(|(i, k)| {
            let v = m.values.get(*k).copied().unwrap_or(0.0);
            let x0 = i as f64 - 0.4 + 0.8 * r as f64 / n_rows;
            Rectangle::new([(x0, 0.0), (x0 + 0.8 / n_rows, v)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(e.to_string()))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// One trial of a search, for [`search_progress`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialPoint {
    /// Trial number.
    pub trial: usize,
    /// Minutes into the study when its result came in.
    pub minutes: f64,
    /// Its validation metric.
    pub valid: f64,
    /// Epochs it trained (the marker grows with them).
    pub epochs: usize,
}

/// Writes `path` (SVG): validation metric against trial number and against study time, with the best so far as a
/// line; larger markers for trials that trained longer.
pub fn search_progress(path: &Path, metric: &str, points: &[TrialPoint]) -> Result<()> {
    let err = |e: String| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) };
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(450);
    let lo = points.iter().map(|p| p.valid).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.valid).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, hi.max(1e-3)) };
    let pad = (hi - lo) * 0.05;
    let max_epochs = points.iter().map(|p| p.epochs).max().unwrap_or(1).max(1) as f64;
    type Axis = (&'static str, fn(&TrialPoint) -> f64);
    let axes: [Axis; 2] = [("trial", |p| p.trial as f64), ("minutes", |p| p.minutes)];
    for ((x_desc, x_of), area) in axes.into_iter().zip([left, right]) {
        let x_max = points.iter().map(x_of).fold(1.0, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("validation {metric} by {x_desc}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart.configure_mesh().x_desc(x_desc).draw().map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(points.iter().map(|p| {
                let r = 2.0 + 4.0 * (p.epochs as f64 / max_epochs);
                Circle::new((x_of(p), p.valid), r as i32, BLUE.mix(0.6).filled())
            }))
            .map_err(|e| err(e.to_string()))?;
        let mut sorted: Vec<&TrialPoint> = points.iter().collect();
        sorted.sort_by(|a, b| x_of(a).total_cmp(&x_of(b)));
        let mut best = f64::NEG_INFINITY;
        let line: Vec<(f64, f64)> = sorted
            .iter()
            .map(|p| {
                best = best.max(p.valid);
                (x_of(p), best)
            })
            .collect();
        chart.draw_series(LineSeries::new(line, &RED)).map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
