//! The picture of a `kavari-load` run: for each peer, how Kavari fares on
//! each metric, as bars of its advantage (the ratio for throughput, its
//! inverse for latency and memory, so above 1 is Kavari ahead everywhere),
//! drawn as SVG beside the Markdown table.

use std::path::Path;

use plotters::prelude::*;

use crate::compare::{Metric, PEERS, Results};

/// The metrics the chart shows, and their bars' colours.
const SHOWN: [(Metric, RGBColor); 5] = [
    (Metric::PublishIdempotent, RGBColor(31, 119, 180)),
    (Metric::PublishPlain, RGBColor(174, 199, 232)),
    (Metric::Consume, RGBColor(44, 160, 44)),
    (Metric::P99, RGBColor(255, 127, 14)),
    (Metric::RssPublish, RGBColor(148, 103, 189)),
];

/// Kavari's advantage over `peer` on `metric`: above 1 is Kavari ahead.
fn advantage(results: &Results, peer: usize, metric: Metric) -> Option<f64> {
    let r = results.ratio(&PEERS[peer], metric)?;
    if metric.higher_is_better() {
        Some(r)
    } else {
        (r > 0.0).then(|| 1.0 / r)
    }
}

/// Draws the chart of `results` to `path` (SVG); `title` says what ran.
pub(crate) fn draw(results: &Results, title: &str, path: &Path) -> Result<(), String> {
    let peers = PEERS.len();
    let top = (0..peers)
        .flat_map(|p| {
            SHOWN
                .iter()
                .filter_map(move |(m, _)| advantage(results, p, *m))
        })
        .fold(2.0_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5_f64..peers as f64 - 0.5, 0.0_f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(peers)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < peers {
                format!("Kavari vs {}", PEERS[i as usize].label)
            } else {
                String::new()
            }
        })
        .y_desc("Kavari's advantage (above 1: Kavari ahead)")
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 0.8 / SHOWN.len() as f64;
    for (k, (metric, colour)) in SHOWN.iter().enumerate() {
        let bars = (0..peers).filter_map(|p| {
            let v = advantage(results, p, *metric)?;
            let x0 = p as f64 - 0.4 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, v)],
                colour.filled(),
            ))
        });
        let colour = *colour;
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(metric.heading())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 1.0), (peers as f64 - 0.5, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
