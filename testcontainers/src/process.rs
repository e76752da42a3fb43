//! One broker process, wrapped in a tiny `sh` watchdog that SIGKILLs the broker
//! when our stdin pipe closes: when the handle drops, and also when the test
//! process dies without running destructors (a static shared broker, a
//! SIGKILL, `process::exit`). In that second case nothing else would remove
//! the broker's directory (a Kafka cluster's weighs about 20 MB), so the
//! watchdog does, once its broker is dead; a handle that stops or drops its
//! broker says so on the pipe first, and the directory stays for its owner
//! (a node restarted on its data, a `TempDir` dropped after its brokers).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::Error;

const WATCHDOG: &str = r#"
"$0" "$@" >>"$KAVARI_BROKER_LOG" 2>&1 &
child=$!
echo "$child"
if read -r _ignored; then
  kill -9 "$child" 2>/dev/null
  wait "$child" 2>/dev/null
else
  kill -9 "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  rm -rf "$KAVARI_BROKER_WORKDIR"
fi
"#;

/// A running broker process and its watchdog.
#[derive(Debug)]
pub(crate) struct BrokerProcess {
    binary: PathBuf,
    watchdog: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl BrokerProcess {
    /// Starts `binary` in `workdir`, its output appended to `log`;
    /// `owned_dir` is removed if this process dies without dropping the
    /// handle (it holds `workdir`).
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        (workdir, owned_dir): (&Path, &Path),
        log: &Path,
    ) -> Result<Self, Error> {
        let err = |action| {
            let binary = binary.to_path_buf();
            move |source| Error::Process {
                binary,
                action,
                source,
            }
        };
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(binary)
            .args(args)
            .current_dir(workdir)
            .env("KAVARI_BROKER_LOG", log)
            .env("KAVARI_BROKER_WORKDIR", owned_dir)
            // At its default level the broker writes every request: hundreds
            // of megabytes for one benchmark run, and a test's RUST_LOG is
            // meant for Kavari, not for it.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(err("spawning"))?;
        let stdin = watchdog.stdin.take();
        let mut line = String::new();
        if let Some(out) = watchdog.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(err("reading its pid"))?;
        }
        let pid = line.trim().parse::<u32>().map_err(|_| Error::Process {
            binary: binary.to_path_buf(),
            action: "reading its pid",
            source: std::io::Error::other(format!("watchdog printed {line:?}")),
        })?;
        Ok(Self {
            binary: binary.to_path_buf(),
            watchdog,
            stdin,
            pid,
        })
    }

    fn signal(&self, signal: &str) -> Result<(), Error> {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| Error::Process {
                binary: self.binary.clone(),
                action: "signalling",
                source,
            })?;
        // A process that is already gone is stopped: that is what was asked.
        let _ = status;
        Ok(())
    }

    /// SIGKILL: the broker dies at once, as a crashed pod would.
    pub(crate) fn kill(mut self) -> Result<(), Error> {
        self.signal("-KILL")?;
        self.reap();
        Ok(())
    }

    /// SIGTERM, then SIGKILL if the broker has not exited within `grace`.
    pub(crate) fn stop(mut self, grace: std::time::Duration) -> Result<(), Error> {
        self.signal("-TERM")?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !Path::new(&format!("/proc/{}", self.pid)).exists() || self.is_zombie() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.signal("-KILL")?;
        self.reap();
        Ok(())
    }

    fn is_zombie(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    }

    fn reap(&mut self) {
        // Closing stdin lets the watchdog finish; it waits for the broker.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.watchdog.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.signal("-KILL");
            self.reap();
        }
    }
}

/// The last 2000 bytes of a broker's log file, for a failure message
/// (empty when it cannot be read).
pub(crate) fn log_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read = file
            .seek(SeekFrom::Start(len.saturating_sub(2000)))
            .and_then(|_| file.read_to_end(&mut tail));
        if read.is_err() {
            tail.clear();
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// A fresh temporary directory for a broker or cluster, named `prefix…`,
/// removed when dropped.
pub(crate) fn workdir(prefix: &str) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| Error::Io {
            action: "creating a broker's directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in broker: `sleep`, in a directory of its own.
    fn sleeper() -> (BrokerProcess, PathBuf) {
        let dir = workdir("kavari-watchdog-").expect("a directory").keep();
        let process = BrokerProcess::spawn(
            Path::new("sleep"),
            &["600".to_string()],
            (&dir, &dir),
            &dir.join("sleep.log"),
        )
        .expect("a sleeping process");
        (process, dir)
    }

    fn gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    /// A test process that dies without dropping its broker (a static
    /// shared broker, a SIGKILL) closes the pipe without a word: the broker
    /// dies and its directory goes with it.
    #[test]
    fn an_orphaned_brokers_directory_is_removed_once_it_is_dead() {
        let (mut process, dir) = sleeper();
        let pid = process.pid;
        assert!(dir.exists());
        drop(process.stdin.take());
        let _ = process.watchdog.wait();
        assert!(gone(pid), "the broker outlived its owner");
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }

    /// A broker killed by its handle (a node restarted on its data) keeps
    /// its directory.
    #[test]
    fn a_killed_brokers_directory_stays() {
        let (process, dir) = sleeper();
        let pid = process.pid;
        process.kill().expect("killed");
        assert!(gone(pid), "the broker survived its kill");
        assert!(dir.exists(), "the directory went");
        std::fs::remove_dir_all(&dir).expect("removed by its owner");
    }
}
