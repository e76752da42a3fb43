//! Where the Apache Kafka broker of the tests is installed, and installing
//! it with `install-kafka.sh` when it is missing.

use std::path::{Path, PathBuf};

use crate::Error;

/// The pinned broker version; `install-kafka.sh` and `kafka/pom.xml` name
/// the same.
pub const KAFKA_VERSION: &str = "4.4.0";

/// The install directory: `KAVARI_KAFKA_HOME`, else
/// `~/.cache/kavari/kafka-<version>` (as `install-kafka.sh` chooses it).
pub(crate) fn kafka_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("KAVARI_KAFKA_HOME") {
        return Some(PathBuf::from(home));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(cache.join("kavari").join(format!("kafka-{KAFKA_VERSION}")))
}

fn installed(home: &Path) -> bool {
    home.join(".installed").is_file()
        && home
            .join("libs")
            .join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
            .is_file()
}

/// The install directory, installing the broker first when it is missing
/// (`install-kafka.sh`: Maven resolves it from Maven Central, about 10 s,
/// once). Set `KAVARI_NO_BROKER_INSTALL=1` to fail fast instead.
pub(crate) fn ensure_kafka_installed() -> Result<PathBuf, Error> {
    let home = kafka_home().ok_or(Error::NoBackend)?;
    if installed(&home) {
        return Ok(home);
    }
    crate::install::run_install_script(
        "install-kafka.sh",
        &format!(
            "Apache Kafka {KAFKA_VERSION} is not installed: installing it now (about 10 s, once)"
        ),
    )?;
    if !installed(&home) {
        return Err(Error::Install {
            status: format!("install-kafka.sh left no broker in {}", home.display()),
        });
    }
    Ok(home)
}

/// The `java` to run the broker with: `$JAVA_HOME/bin/java`, else `java`
/// on `PATH`.
pub(crate) fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| Path::new(&h).join("bin").join("java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// The class path of the installed jars (kafka-clients among them).
pub(crate) fn classpath(home: &Path) -> String {
    format!("{}/*", home.join("libs").display())
}

/// A `java` command running the single-file program `source` (Java's
/// source-file mode) with the jars of `home` on its class path, their quiet
/// logging, and the JVM `options`. Arguments follow.
pub(crate) fn java_command(home: &Path, options: &[&str], source: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(java());
    command
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            home.join("log4j2.yaml").display()
        ))
        .args(options)
        .arg("-cp")
        .arg(classpath(home))
        .arg(source);
    command
}

/// A `java` command running the single-file program `source` with the
/// Kafka jars of the tests (kafka-clients among them) on its class path,
/// installing them first when they are missing: a Java client as a peer,
/// with no cluster of ours needed (a benchmark's Java side). The JVM runs
/// with its defaults (full JIT); arguments follow.
pub fn java_program(source: &Path) -> Result<std::process::Command, Error> {
    Ok(java_command(&ensure_kafka_installed()?, &[], source))
}
