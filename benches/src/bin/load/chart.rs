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
    let shown: Vec<f64> = (0..peers)
        .flat_map(|p| {
            SHOWN
                .iter()
                .filter_map(move |(m, _)| advantage(results, p, *m))
        })
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    // A log scale with 1 in the middle of the picture: a bar rises from 1
    // where Kavari is ahead and falls from it where it is behind, and 2×
    // ahead is as tall as 2× behind.
    let reach = shown
        .iter()
        .map(|v| v.ln().abs())
        .fold(2.0_f64.ln(), f64::max)
        * 1.15;
    let (low, high) = ((-reach).exp(), reach.exp());
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5_f64..peers as f64 - 0.5, (low..high).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(peers)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < peers {
                format!("Kavari vs {}", PEERS[i as usize].label)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.2}×"))
        .y_desc("Kavari's advantage (log scale; above 1: Kavari ahead)")
        .draw()
        .map_err(|e| e.to_string())?;
    let width = 0.8 / SHOWN.len() as f64;
    for (k, (metric, colour)) in SHOWN.iter().enumerate() {
        let bars = (0..peers).filter_map(|p| {
            let v = advantage(results, p, *metric)?;
            let x0 = p as f64 - 0.4 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 1.0), (x0 + width * 0.9, v)],
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::compare::Run;

    #[test]
    fn the_chart_names_every_peer_and_metric_and_draws_a_bar_per_ratio() {
        let mut all: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
        let mut put = |client: &str, mode: &str, pairs: &[(&str, &str)]| {
            all.entry((client.into(), mode.into())).or_default().push(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        };
        put(
            "kavari",
            "publish",
            &[("msgs_per_s", "100"), ("rss_kb", "2048")],
        );
        put("kavari-plain", "publish", &[("msgs_per_s", "200")]);
        put("kavari", "consume", &[("msgs_per_s", "100")]);
        put("kavari", "latency", &[("p99_ms", "10")]);
        put(
            "krafka",
            "publish",
            &[("msgs_per_s", "50"), ("rss_kb", "1024")],
        );
        put("krafka-plain", "publish", &[("msgs_per_s", "400")]);
        put("krafka", "consume", &[("msgs_per_s", "25")]);
        put("krafka", "latency", &[("p99_ms", "40")]);
        let results = Results::from_runs(all);
        let path = std::env::temp_dir().join(format!("kavari-chart-{}.svg", std::process::id()));
        draw(&results, "a test", &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        for text in ["Kavari vs krafka", "Kavari vs Java client", "a test"] {
            assert!(svg.contains(text), "{text} missing");
        }
        for (metric, _) in SHOWN {
            assert!(svg.contains(metric.heading()), "{metric:?} missing");
        }
        // Five bars for krafka (2, 0.5, 4, 4 and 0.5 times), five legend
        // swatches, the background, and the legend's fill and border.
        assert_eq!(svg.matches("<rect").count(), 5 + 5 + 1 + 2, "{svg}");
        // On the log scale a bar twice ahead is as tall as one twice behind.
        // The bars follow the background, before the legend.
        let heights: Vec<i32> = svg
            .lines()
            .filter(|l| l.contains("<rect"))
            .skip(1)
            .take(5)
            .filter_map(|l| l.split("height=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(heights.len(), 5, "{heights:?}");
        assert!((heights[0] - heights[1]).abs() <= 2, "{heights:?}");
    }
}
