//! Free loopback ports for brokers and proxies.

use crate::Error;

/// `n` distinct free loopback ports, none handed out before by this
/// process, all below the kernel's ephemeral range: a port from that range
/// can be taken by any outgoing connection (a client's, a proxy's) between
/// the moment it is found free and the moment the broker binds it. The
/// search starts at an offset drawn from the process id and the clock, so
/// test processes side by side rarely try the same ports.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const LOWEST: u16 = 10_000;
    let highest = ephemeral_start().saturating_sub(1).max(LOWEST + 1_000);
    let span = u32::from(highest - LOWEST);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut ports = Vec::with_capacity(n);
    for i in 0..span {
        if ports.len() == n {
            break;
        }
        let port = LOWEST + u16::try_from((seed.wrapping_add(i)) % span).unwrap_or(0);
        if handed.contains(&port) {
            continue;
        }
        // Free now: nothing listens there, and the kernel hands it to no
        // outgoing connection.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(Error::Io {
            action: "finding a free port",
            source: std::io::Error::other(format!(
                "found {} of {n} free ports between {LOWEST} and {highest}",
                ports.len()
            )),
        });
    }
    Ok(ports)
}

/// The first port of the kernel's ephemeral range (Linux's
/// `ip_local_port_range`; 32768 where it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
