//! What a `kavari-load` run found, and Kavari against each peer: the
//! medians of the runs, the metrics compared, and the ratios (Kavari over
//! the peer, with idempotence alike where that matters).

use std::collections::BTreeMap;

/// One worker's result line, parsed: `key=value` pairs.
pub(crate) type Run = BTreeMap<String, String>;

/// The median run of every client and mode.
pub(crate) struct Results {
    rows: BTreeMap<String, BTreeMap<String, Run>>,
}

fn num(r: &Run, k: &str) -> Option<f64> {
    r.get(k).and_then(|v| v.parse().ok())
}

/// The run of median `key`.
fn median_run(mut runs: Vec<Run>, key: &str) -> Run {
    runs.sort_by(|a, b| {
        let (a, b) = (num(a, key).unwrap_or(0.0), num(b, key).unwrap_or(0.0));
        a.total_cmp(&b)
    });
    runs.get(runs.len() / 2).cloned().unwrap_or_default()
}

/// Every figure's median over `runs`, each on its own; a figure that is
/// not a number is the first run's.
fn median_of_each(runs: &[Run]) -> Run {
    let mut out = runs.first().cloned().unwrap_or_default();
    for (key, value) in &mut out {
        let mut all: Vec<f64> = runs.iter().filter_map(|r| num(r, key)).collect();
        if all.len() != runs.len() {
            continue;
        }
        all.sort_by(f64::total_cmp);
        if let Some(m) = all.get(all.len() / 2) {
            *value = m.to_string();
        }
    }
    out
}

impl Results {
    /// The median of each client's runs of each mode: 2-core machines are
    /// noisy. A publish or consume run is kept whole, the one of median
    /// throughput (its batch and request counts go with it); latency is
    /// the median of each figure on its own, since a run's tail is one
    /// sample of the cluster's pauses: the p99 of the run with the median
    /// p50 read 53.5 ms where the three runs' p99s were 8.0, 24.0 and 53.5.
    pub(crate) fn from_runs(all: BTreeMap<(String, String), Vec<Run>>) -> Self {
        let mut rows: BTreeMap<String, BTreeMap<String, Run>> = BTreeMap::new();
        for ((client, mode), runs) in all {
            let median = match mode.as_str() {
                "latency" => median_of_each(&runs),
                _ => median_run(runs, "msgs_per_s"),
            };
            rows.entry(client).or_default().insert(mode, median);
        }
        Self { rows }
    }

    /// `key` of `client`'s median `mode` run.
    pub(crate) fn cell(&self, client: &str, mode: &str, key: &str) -> Option<f64> {
        self.rows
            .get(client)
            .and_then(|m| m.get(mode))
            .and_then(|r| num(r, key))
    }

    /// `metric` of `client`.
    fn value(&self, client: &str, metric: Metric) -> Option<f64> {
        let (mode, key) = metric.reading();
        let v = self.cell(client, mode, key)?;
        Some(if key == "rss_kb" { v / 1024.0 } else { v })
    }

    /// Kavari's `metric` over `peer`'s, with idempotence alike where
    /// `metric` says so; `None` where either is missing.
    pub(crate) fn ratio(&self, peer: &Peer, metric: Metric) -> Option<f64> {
        let (ours, theirs) = metric.clients(peer)?;
        let (a, b) = (self.value(ours, metric)?, self.value(theirs, metric)?);
        (b > 0.0).then(|| a / b)
    }

    /// Kavari's `metric` over the best peer's (the fastest, or the least
    /// latency or memory).
    pub(crate) fn ratio_to_best(&self, metric: Metric) -> Option<(f64, &'static str)> {
        let mut best: Option<(f64, &Peer)> = None;
        for peer in &PEERS {
            let Some((_, theirs)) = metric.clients(peer) else {
                continue;
            };
            let Some(v) = self.value(theirs, metric) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((b, _)) if metric.higher_is_better() => v > b,
                Some((b, _)) => v < b,
            };
            if better {
                best = Some((v, peer));
            }
        }
        let (_, peer) = best?;
        Some((self.ratio(peer, metric)?, peer.label))
    }
}

/// A client Kavari is compared with, and its runs with idempotence on and
/// off (the run of its own default is one of the two).
pub(crate) struct Peer {
    /// What the tables call it.
    pub(crate) label: &'static str,
    /// Its run at its default.
    pub(crate) default: &'static str,
    /// Its idempotent run, if it has one.
    pub(crate) idempotent: Option<&'static str>,
    /// Its run with idempotence off.
    pub(crate) plain: &'static str,
}

/// Every peer, in table order.
pub(crate) const PEERS: [Peer; 5] = [
    Peer {
        label: "raw rskafka",
        default: "rskafka",
        idempotent: None,
        plain: "rskafka",
    },
    Peer {
        label: "librdkafka",
        default: "rdkafka",
        idempotent: Some("rdkafka-idempotent"),
        plain: "rdkafka",
    },
    Peer {
        label: "krafka",
        default: "krafka",
        idempotent: Some("krafka"),
        plain: "krafka-plain",
    },
    Peer {
        label: "kacrab",
        default: "kacrab",
        idempotent: Some("kacrab"),
        plain: "kacrab-plain",
    },
    Peer {
        label: "Java client",
        default: "java",
        idempotent: Some("java"),
        plain: "java-plain",
    },
];

/// What Kavari and a peer are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    /// Publish throughput, each client at its default.
    PublishDefaults,
    /// Publish throughput, both idempotent.
    PublishIdempotent,
    /// Publish throughput, both with idempotence off.
    PublishPlain,
    /// Consume throughput.
    Consume,
    /// End-to-end latency at the fixed rate, p50.
    P50,
    /// p99.
    P99,
    /// p99.9.
    P999,
    /// Peak RSS while publishing (defaults).
    RssPublish,
    /// Peak RSS while consuming.
    RssConsume,
}

impl Metric {
    /// Every metric, in column order.
    pub(crate) const ALL: [Metric; 9] = [
        Metric::PublishDefaults,
        Metric::PublishIdempotent,
        Metric::PublishPlain,
        Metric::Consume,
        Metric::P50,
        Metric::P99,
        Metric::P999,
        Metric::RssPublish,
        Metric::RssConsume,
    ];

    /// The column's heading.
    pub(crate) fn heading(self) -> &'static str {
        match self {
            Metric::PublishDefaults => "publish, defaults",
            Metric::PublishIdempotent => "publish, both idempotent",
            Metric::PublishPlain => "publish, both idempotence off",
            Metric::Consume => "consume",
            Metric::P50 => "latency p50",
            Metric::P99 => "latency p99",
            Metric::P999 => "latency p99.9",
            Metric::RssPublish => "peak RSS publish",
            Metric::RssConsume => "peak RSS consume",
        }
    }

    /// Whether more is better (throughput) or less (latency, memory).
    pub(crate) fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::PublishDefaults
                | Metric::PublishIdempotent
                | Metric::PublishPlain
                | Metric::Consume
        )
    }

    /// The mode and result key it is read from.
    fn reading(self) -> (&'static str, &'static str) {
        match self {
            Metric::PublishDefaults | Metric::PublishIdempotent | Metric::PublishPlain => {
                ("publish", "msgs_per_s")
            }
            Metric::Consume => ("consume", "msgs_per_s"),
            Metric::P50 => ("latency", "p50_ms"),
            Metric::P99 => ("latency", "p99_ms"),
            Metric::P999 => ("latency", "p999_ms"),
            Metric::RssPublish => ("publish", "rss_kb"),
            Metric::RssConsume => ("consume", "rss_kb"),
        }
    }

    /// Kavari's run and the peer's run this metric compares.
    fn clients(self, peer: &Peer) -> Option<(&'static str, &'static str)> {
        match self {
            Metric::PublishIdempotent => Some(("kavari", peer.idempotent?)),
            Metric::PublishPlain => Some(("kavari-plain", peer.plain)),
            _ => Some(("kavari", peer.default)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Run {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A run of a client's mode: its result's pairs.
    type Given<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn results(runs: &[Given<'_>]) -> Results {
        let mut all: BTreeMap<(String, String), Vec<Run>> = BTreeMap::new();
        for (client, mode, pairs) in runs {
            all.entry((client.to_string(), mode.to_string()))
                .or_default()
                .push(run(pairs));
        }
        Results::from_runs(all)
    }

    #[test]
    fn the_median_run_is_kept() {
        let r = results(&[
            ("kavari", "publish", &[("msgs_per_s", "30")]),
            ("kavari", "publish", &[("msgs_per_s", "10")]),
            ("kavari", "publish", &[("msgs_per_s", "20")]),
        ]);
        assert_eq!(r.cell("kavari", "publish", "msgs_per_s"), Some(20.0));
    }

    /// Latency's figures are each their own median: one run's pause does
    /// not decide the p99.
    #[test]
    fn each_latency_figure_is_its_own_median() {
        let r = results(&[
            (
                "kavari",
                "latency",
                &[("p50_ms", "2.69"), ("p99_ms", "53.52")],
            ),
            ("kavari", "latency", &[("p50_ms", "2.52"), ("p99_ms", "24")]),
            (
                "kavari",
                "latency",
                &[("p50_ms", "2.73"), ("p99_ms", "8.04")],
            ),
        ]);
        assert_eq!(r.cell("kavari", "latency", "p50_ms"), Some(2.69));
        assert_eq!(r.cell("kavari", "latency", "p99_ms"), Some(24.0));
    }

    #[test]
    fn publishing_is_compared_with_idempotence_alike() {
        let r = results(&[
            ("kavari", "publish", &[("msgs_per_s", "100")]),
            ("kavari-plain", "publish", &[("msgs_per_s", "200")]),
            ("rdkafka", "publish", &[("msgs_per_s", "400")]),
            ("rdkafka-idempotent", "publish", &[("msgs_per_s", "50")]),
        ]);
        let rdkafka = &PEERS[1];
        assert_eq!(r.ratio(rdkafka, Metric::PublishDefaults), Some(0.25));
        assert_eq!(r.ratio(rdkafka, Metric::PublishIdempotent), Some(2.0));
        assert_eq!(r.ratio(rdkafka, Metric::PublishPlain), Some(0.5));
        assert_eq!(r.ratio(&PEERS[0], Metric::PublishIdempotent), None);
    }

    #[test]
    fn the_best_peer_is_the_fastest_or_the_leanest() {
        let r = results(&[
            (
                "kavari",
                "latency",
                &[("p50_ms", "10"), ("p99_ms", "20"), ("p999_ms", "30")],
            ),
            (
                "krafka",
                "latency",
                &[("p50_ms", "5"), ("p99_ms", "40"), ("p999_ms", "60")],
            ),
            (
                "java",
                "latency",
                &[("p50_ms", "8"), ("p99_ms", "10"), ("p999_ms", "90")],
            ),
            ("kavari", "consume", &[("msgs_per_s", "100")]),
            ("krafka", "consume", &[("msgs_per_s", "50")]),
            ("java", "consume", &[("msgs_per_s", "400")]),
        ]);
        assert_eq!(r.ratio_to_best(Metric::P50), Some((2.0, "krafka")));
        assert_eq!(r.ratio_to_best(Metric::P99), Some((2.0, "Java client")));
        assert_eq!(
            r.ratio_to_best(Metric::Consume),
            Some((0.25, "Java client"))
        );
        assert_eq!(r.ratio_to_best(Metric::RssPublish), None);
    }
}
