//! The clients `kavari-load` runs as programs of their own: librdkafka
//! (`benches/rdkafka-peer`), krafka and kacrab (`benches/rust-peers`), each
//! built on first use outside the workspace because they compile C, and the
//! Java client (`benches/java-peer/LoadPeer.java`, run on the JVM with the
//! Kafka jars of the tests). All take the command line of
//! `kavari_benches::peer`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer programs of a run, or why one is missing.
pub(crate) struct Peers {
    rdkafka: Result<PathBuf, String>,
    rust: Result<PathBuf, String>,
    java: Result<PathBuf, String>,
}

/// Builds `dir`'s release binary `bin` with cargo; why not when it fails.
fn build(dir: &str, bin: &str, what: &str) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    eprintln!("kavari-load: building {what} (minutes the first time)");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {}: {status}", dir.display()));
    }
    Ok(dir.join("target/release").join(bin))
}

impl Peers {
    /// Builds the peers `clients` need (each build is cargo's no-op once
    /// done); the others are missing, with the reason.
    pub(crate) fn build(clients: &[&str]) -> Self {
        let wanted = |families: &[&str]| clients.iter().any(|c| families.contains(&family(c)));
        let skipped = || Err("not asked for".to_string());
        let java = Path::new(env!("CARGO_MANIFEST_DIR")).join("java-peer/LoadPeer.java");
        Self {
            rdkafka: if wanted(&["rdkafka"]) {
                build(
                    "rdkafka-peer",
                    "kavari-rdkafka-peer",
                    "the librdkafka peer (compiles librdkafka)",
                )
            } else {
                skipped()
            },
            rust: if wanted(&["krafka", "kacrab"]) {
                build(
                    "rust-peers",
                    "kavari-rust-peers",
                    "the krafka and kacrab peers",
                )
            } else {
                skipped()
            },
            java: if wanted(&["java"]) {
                kavari_testcontainers::java_program(&java)
                    .map(|_| java)
                    .map_err(|e| e.to_string())
            } else {
                skipped()
            },
        }
    }

    /// The command that runs `client` (before its workload's words), `None`
    /// for the clients `kavari-load` runs itself, or why it cannot run.
    pub(crate) fn command(&self, client: &str) -> Option<Result<Command, String>> {
        let base = family(client);
        let mut command = match base {
            "rdkafka" => self.rdkafka.clone().map(Command::new),
            "krafka" | "kacrab" => self.rust.clone().map(|bin| {
                let mut c = Command::new(bin);
                c.arg(base);
                c
            }),
            "java" => self.java.clone().and_then(|source| {
                kavari_testcontainers::java_program(&source).map_err(|e| e.to_string())
            }),
            _ => return None,
        };
        if let Ok(c) = &mut command {
            // The peers' own logging would bury the result line.
            c.env_remove("RUST_LOG");
        }
        Some(command)
    }

    /// Why `client`'s program is missing, if it is.
    pub(crate) fn missing(&self, client: &str) -> Option<String> {
        match self.command(client) {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// The client a variant belongs to: `krafka` for `krafka-plain`.
pub(crate) fn family(client: &str) -> &str {
    client
        .strip_suffix("-plain")
        .or_else(|| client.strip_suffix("-idempotent"))
        .unwrap_or(client)
}

/// The order of one repeat's runs: `clients` rotated by `repeat` (a broker
/// slows as it fills, so a fixed order would favour whichever ran first),
/// with each client's other publishing mode right after the first of its
/// family: the two are compared with each other (idempotent over plain),
/// so they should meet the cluster in the same state. Runs apart, the
/// same binary's ratio on the Kafka cluster swung from 0.49 to 1.15.
pub(crate) fn run_order<'a>(clients: &[&'a str], repeat: usize) -> Vec<&'a str> {
    let n = clients.len();
    let rotated = (0..n).map(|i| clients[(repeat + i) % n]);
    let mut order: Vec<&str> = Vec::with_capacity(n);
    for c in rotated {
        if order.contains(&c) {
            continue;
        }
        order.push(c);
        let kin = clients
            .iter()
            .filter(|k| **k != c && family(k) == family(c) && !order.contains(k));
        order.extend(kin.copied().collect::<Vec<_>>());
    }
    order
}

/// The last word of a peer's publish: idempotence asked for, or the
/// client's own default.
pub(crate) fn idempotence_word(client: &str) -> Option<&'static str> {
    if client.ends_with("-plain") {
        Some("plain")
    } else if client.ends_with("-idempotent") {
        Some("idempotent")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_names_its_family_and_its_idempotence() {
        assert_eq!(family("krafka-plain"), "krafka");
        assert_eq!(family("rdkafka-idempotent"), "rdkafka");
        assert_eq!(family("java"), "java");
        assert_eq!(idempotence_word("java-plain"), Some("plain"));
        assert_eq!(idempotence_word("rdkafka-idempotent"), Some("idempotent"));
        assert_eq!(idempotence_word("kacrab"), None);
    }

    /// Every client runs once a repeat, each repeat starting with the next
    /// client, and a client's two publishing modes run back to back.
    #[test]
    fn a_clients_two_modes_run_back_to_back() {
        let clients = [
            "rskafka",
            "kavari",
            "rdkafka",
            "kavari-plain",
            "rdkafka-idempotent",
        ];
        assert_eq!(
            run_order(&clients, 0),
            [
                "rskafka",
                "kavari",
                "kavari-plain",
                "rdkafka",
                "rdkafka-idempotent"
            ]
        );
        assert_eq!(
            run_order(&clients, 1),
            [
                "kavari",
                "kavari-plain",
                "rdkafka",
                "rdkafka-idempotent",
                "rskafka"
            ]
        );
        // Starting with a variant, its family follows it.
        assert_eq!(
            run_order(&clients, 3),
            [
                "kavari-plain",
                "kavari",
                "rdkafka-idempotent",
                "rdkafka",
                "rskafka"
            ]
        );
        for repeat in 0..clients.len() {
            let mut order = run_order(&clients, repeat);
            order.sort_unstable();
            let mut all = clients.to_vec();
            all.sort_unstable();
            assert_eq!(order, all, "repeat {repeat}: each client once");
        }
    }
}
