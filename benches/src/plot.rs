//! The SVG plot `diskio-bench --json FILE` writes beside the file: the latency distribution of
//! every engine on each durable WAL workload, one panel per workload (x: the percentile on a
//! scale of nines, y: latency in µs, logarithmic).

use std::path::Path;

use plotters::prelude::*;

use crate::report::{CURVE, Figures};

/// One panel: a workload and each engine's figures on it.
pub struct Panel {
    /// The workload's name.
    pub title: String,
    /// (engine, medians over its runs).
    pub engines: Vec<(String, Figures)>,
}

/// The x position of quantile `q`: how many nines it has (0.9 → 1, 0.99 → 2, ...).
fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// Writes the panels to `path` as SVG.
///
/// # Errors
///
/// The drawing backend's, as text.
pub fn write_svg(path: &Path, panels: &[Panel]) -> Result<(), String> {
    if panels.is_empty() {
        return Ok(());
    }
    let height = 360 * panels.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len(), 1));
    for (panel, area) in panels.iter().zip(areas) {
        let points: Vec<f64> = panel
            .engines
            .iter()
            .flat_map(|(_, f)| f.curve_us)
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let (lo, hi) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if points.is_empty() {
            continue;
        }
        let x_max = nines(CURVE[CURVE.len() - 1]);
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, (lo * 0.8..hi * 1.25).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency, µs")
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| format!("p{}", 100.0 * (1.0 - 10f64.powf(-x))))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (engine, f)) in panel.engines.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let series: Vec<(f64, f64)> = CURVE
                .iter()
                .zip(f.curve_us)
                .filter(|(_, us)| us.is_finite() && *us > 0.0)
                .map(|(&q, us)| (nines(q), us))
                .collect();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(engine.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    series
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
