use std::path::{Path, PathBuf};

use crate::Error;

/// The broker binary to run: `KAVARI_BROKER_BIN`, else `nisshi` or `tansu` in
/// `$CARGO_HOME/bin`, else on `PATH`. `None` when none is installed.
pub fn broker_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("KAVARI_BROKER_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|p| p.join("bin"));
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for name in ["nisshi", "tansu"] {
        for dir in cargo_bin.iter().chain(path_dirs.iter()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Returns the broker binary, installing it with `install-broker.sh` first
/// when it is missing (about 11 minutes on 2 cores, once; progress goes to
/// stderr). Set `KAVARI_NO_BROKER_INSTALL=1` to fail fast instead.
pub fn ensure_broker_installed() -> Result<PathBuf, Error> {
    if let Some(bin) = broker_binary() {
        return Ok(bin);
    }
    if std::env::var_os("KAVARI_NO_BROKER_INSTALL").is_some() {
        return Err(Error::NoBackend);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install-broker.sh");
    if !script.is_file() {
        return Err(Error::NoBackend);
    }
    tracing::warn!("no test broker installed: building it now (about 11 minutes, once)");
    eprintln!(
        "kavari-testcontainers: the test broker is not installed; building it now with {} \
         (about 11 minutes on 2 cores, once)",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .map_err(|source| Error::Io {
            action: "running install-broker.sh",
            source,
        })?;
    if !status.success() {
        return Err(Error::Install {
            status: status.to_string(),
        });
    }
    broker_binary().ok_or(Error::NoBackend)
}
