//! Training curves as SVG: loss and validation NDCG@10 per epoch, side by side.

use crate::trainer::EpochRecord;
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes `path` (SVG). An empty history writes an empty chart.
pub fn training_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let err = |e: String| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) };
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(450);
    let max_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
    let series: [Series<'_>; 2] = [
        ("training loss", history.iter().map(|r| (r.epoch as f64, r.loss)).collect(), BLUE),
        ("validation NDCG@10", history.iter().filter_map(|r| r.valid_ndcg10.map(|v| (r.epoch as f64, v))).collect(), RED),
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
