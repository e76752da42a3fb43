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
    run_install_script(
        "install-broker.sh",
        "the test broker is not installed; building it now (about 11 minutes on 2 cores, once)",
    )?;
    broker_binary().ok_or(Error::NoBackend)
}

/// Runs `script` from this crate's directory, saying `why` first, unless
/// `KAVARI_NO_BROKER_INSTALL` is set (then: no backend, at once). Its
/// progress goes to stderr.
pub(crate) fn run_install_script(script: &str, why: &str) -> Result<(), Error> {
    if std::env::var_os("KAVARI_NO_BROKER_INSTALL").is_some() {
        return Err(Error::NoBackend);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    if !path.is_file() {
        return Err(Error::NoBackend);
    }
    tracing::warn!(script, "{why}");
    eprintln!("kavari-testcontainers: {why} ({})", path.display());
    let status = std::process::Command::new("bash")
        .arg(&path)
        .status()
        .map_err(|source| Error::Io {
            action: "running an install script",
            source,
        })?;
    if !status.success() {
        return Err(Error::Install {
            status: format!("{script}: {status}"),
        });
    }
    Ok(())
}

/// Runs a blocking `ensure_*_installed` off the async runtime.
pub(crate) async fn installed(ensure: fn() -> Result<PathBuf, Error>) -> Result<PathBuf, Error> {
    tokio::task::spawn_blocking(ensure)
        .await
        .map_err(|e| Error::Io {
            action: "waiting for the broker install",
            source: std::io::Error::other(e),
        })?
}
