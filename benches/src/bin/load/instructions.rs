//! `kavari-load --instructions`: each client's work per published and per
//! consumed record, in instructions counted by valgrind's callgrind, which
//! counts the same for the same binary and input whatever else the machine
//! is doing. Each client runs `--messages` records and then twice as many,
//! each in a process of its own under callgrind; the difference over
//! `--messages` cancels start-up, connecting and joining. The broker is
//! another process and is not counted. The Java client is left out (a JIT
//! under callgrind measures the JIT).

use std::process::Command;

use crate::compare::PEERS;

/// Instructions callgrind counted for `command`, or why there are none.
fn counted(command: &Command) -> Result<u64, String> {
    let mut valgrind = Command::new("valgrind");
    valgrind
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => valgrind.env(key, v),
            None => valgrind.env_remove(key),
        };
    }
    let out = valgrind.output().map_err(|e| format!("valgrind: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stdout.contains("RESULT ") {
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!("{}: {}", out.status, tail.join(" | ")));
    }
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected : ")
                .map(|(_, n)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no instruction count in valgrind's output".to_string())
}

/// A client's counts for one mode: its run of `small` records and its run
/// of twice as many.
type Pair = (Result<u64, String>, Result<u64, String>);

/// The clients measured: Kavari and every peer but the Java client, each
/// at its default.
fn clients() -> Vec<&'static str> {
    std::iter::once("kavari")
        .chain(PEERS.iter().map(|p| p.default))
        .filter(|c| *c != "java")
        .collect()
}

/// The instructions table of a run: `small` records of `size` bytes, then
/// twice as many, published and consumed by each client. `command` makes a
/// client's command for a mode and a record count (or says why there is
/// none); `top_up` writes `small` more records to the consume topic, which
/// holds `small` at first.
pub(crate) async fn table(
    small: usize,
    size: usize,
    command: impl Fn(&str, &str, usize) -> Result<Command, String>,
    top_up: impl Future<Output = ()>,
) -> String {
    let clients = clients();
    // counts[client][mode] = (small run, large run)
    let mut counts: Vec<[Pair; 2]> = clients
        .iter()
        .map(|_| std::array::from_fn(|_| (Err("not run".into()), Err("not run".into()))))
        .collect();
    let mut top_up = Some(top_up);
    for (phase, n) in [small, 2 * small].into_iter().enumerate() {
        if phase == 1
            && let Some(top_up) = top_up.take()
        {
            top_up.await;
        }
        for (c, client) in clients.iter().enumerate() {
            for (m, mode) in ["publish", "consume"].into_iter().enumerate() {
                let result = command(client, mode, n).and_then(|cmd| counted(&cmd));
                eprintln!("kavari-load: {client} {mode} {n} records under callgrind: {result:?}");
                let slot = &mut counts[c][m];
                if phase == 0 {
                    slot.0 = result;
                } else {
                    slot.1 = result;
                }
            }
        }
    }
    let per_record = |pair: &Pair| match pair {
        (Ok(a), Ok(b)) if b > a => Some((b - a) as f64 / small as f64),
        _ => None,
    };
    let raw = clients.iter().position(|c| *c == "rskafka");
    let mut out = format!(
        "\nInstructions per record (callgrind; {small} and then {} records of {} B, the difference over {small}; client process only):\n\n",
        2 * small,
        size
    );
    out.push_str(
        "| client | per published record | / raw rskafka | per consumed record | / raw rskafka |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: |\n");
    for (c, client) in clients.iter().enumerate() {
        out.push_str(&format!("| {client} |"));
        for (m, pair) in counts[c].iter().enumerate() {
            let ours = per_record(pair);
            let base = raw.and_then(|r| per_record(&counts[r][m]));
            match (ours, base) {
                (Some(v), Some(b)) => out.push_str(&format!(" {v:.0} | {:.2} |", v / b)),
                (Some(v), None) => out.push_str(&format!(" {v:.0} | n/a |")),
                _ => out.push_str(" n/a | n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_but_the_jit_is_counted() {
        let c = clients();
        assert_eq!(c[0], "kavari");
        assert!(c.contains(&"rskafka") && c.contains(&"krafka") && c.contains(&"kacrab"));
        assert!(!c.contains(&"java"));
    }
}
