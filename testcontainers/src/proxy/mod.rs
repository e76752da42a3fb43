//! A TCP proxy between clients and the brokers that injects network faults.
//!
//! It listens on one loopback port per broker (one for a single broker, one
//! per node of a cluster, each node advertising its port), and one set of
//! settings, counters and rewrites applies to all of them, so a test cuts
//! off "the cluster" with one call. It runs on a thread of its own with its
//! own runtime, so it keeps working across test runtimes and under
//! `start_paused` clocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

mod frames;

use frames::*;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultMode {
    /// Forward everything (with the configured latency).
    #[default]
    Pass,
    /// Stop listening: new connections are refused (ECONNREFUSED). Open
    /// connections keep working unless cut.
    Refuse,
    /// A silent partition: connections are accepted but nothing is forwarded
    /// either way and nothing is closed (no RST, no FIN). Bytes sent meanwhile
    /// are held and delivered after a heal, as TCP retransmission would.
    BlackHole,
    /// Requests reach the broker, its answers are thrown away: the broker
    /// did the work, the client never hears of it (a connection that died
    /// after the broker wrote a batch).
    LoseAnswers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    mode: FaultMode,
    latency: Duration,
    /// Bumped by `cut_all`: every connection older than this closes.
    cut_epoch: u64,
    shutdown: bool,
}

/// A fault-injecting TCP proxy. See [`FaultMode`]. Dropping it closes the
/// listeners and every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addresses: Vec<SocketAddr>,
    settings: watch::Sender<Settings>,
    accepted: Arc<AtomicU64>,
    /// How many of the listeners listen now.
    listening: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<RequestCounts>,
    rewrite: Arc<AnswerRewrite>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: impl Into<String>) -> Result<Self, Error> {
        Self::start_many(vec![upstream.into()])
    }

    /// Listens on one free loopback port per upstream and forwards each to
    /// its own ([`addresses`](Self::addresses) in the same order): the
    /// proxy of a cluster, whose nodes each advertise their port.
    pub fn start_many(upstreams: Vec<String>) -> Result<Self, Error> {
        let bind_error = |source| Error::Io {
            action: "binding the fault proxy",
            source,
        };
        let mut listeners = Vec::with_capacity(upstreams.len());
        for upstream in upstreams {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(bind_error)?;
            let address = listener.local_addr().map_err(bind_error)?;
            listener.set_nonblocking(true).map_err(bind_error)?;
            listeners.push((listener, address, upstream));
        }
        let addresses: Vec<SocketAddr> = listeners.iter().map(|(_, a, _)| *a).collect();
        let Some(first) = addresses.first().copied() else {
            return Err(Error::Io {
                action: "starting the fault proxy",
                source: std::io::Error::other("no upstream to forward to"),
            });
        };
        let (settings, rx) = watch::channel(Settings {
            mode: FaultMode::Pass,
            latency: Duration::ZERO,
            cut_epoch: 0,
            shutdown: false,
        });
        let accepted = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(RequestCounts {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            kept: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let rewrite = Arc::new(AnswerRewrite {
            hidden: std::sync::atomic::AtomicI32::new(-1),
            ..AnswerRewrite::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                action: "starting the fault proxy's runtime",
                source,
            })?;
        let listening = Arc::new(std::sync::atomic::AtomicUsize::new(listeners.len()));
        let watched = Watched {
            accepted: Arc::clone(&accepted),
            listening: Arc::clone(&listening),
            requests: Arc::clone(&requests),
            rewrite: Arc::clone(&rewrite),
        };
        std::thread::Builder::new()
            .name(format!("fault-proxy-{}", first.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let loops = listeners.into_iter().map(|(listener, address, upstream)| {
                        accept_loop(listener, address, upstream, rx.clone(), watched.clone())
                    });
                    futures::future::join_all(loops).await;
                });
            })
            .map_err(|source| Error::Io {
                action: "spawning the fault proxy thread",
                source,
            })?;
        Ok(Self {
            addresses,
            settings,
            accepted,
            listening,
            requests,
            rewrite,
        })
    }

    /// The address clients connect to (the first broker's, for a proxy of
    /// several).
    pub fn address(&self) -> SocketAddr {
        self.addresses[0]
    }

    /// Every address, one per upstream, in the order they were given.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Sets the mode for new and open connections. Returns once the
    /// listener has followed: after `Refuse`, a connect is refused.
    pub fn set_mode(&self, mode: FaultMode) {
        self.settings.send_modify(|s| s.mode = mode);
        let want_listening = if mode == FaultMode::Refuse {
            0
        } else {
            self.addresses.len()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.listening.load(Ordering::Acquire) != want_listening
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        self.settings.borrow().mode
    }

    /// Refuse new connections and cut the open ones: the broker looks down.
    pub fn refuse(&self) {
        self.set_mode(FaultMode::Refuse);
        self.cut_all();
    }

    /// Black-hole all traffic, open connections included: a silent partition.
    pub fn black_hole(&self) {
        self.set_mode(FaultMode::BlackHole);
    }

    /// Back to [`FaultMode::Pass`] with no added latency.
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.set_mode(FaultMode::Pass);
    }

    /// Closes every open connection (FIN), as a broker restart would.
    pub fn cut_all(&self) {
        self.settings.send_modify(|s| s.cut_epoch += 1);
    }

    /// Adds `latency` before each forwarded chunk, both directions.
    pub fn set_latency(&self, latency: Duration) {
        self.settings.send_modify(|s| s.latency = latency);
    }

    /// Requests reach the broker, its answers are thrown away (see
    /// [`FaultMode::LoseAnswers`]) until [`heal`](Self::heal).
    pub fn lose_answers(&self) {
        self.set_mode(FaultMode::LoseAnswers);
    }

    /// The next `times` Produce answers reach the client with `code` (a
    /// Kafka error code) as their first partition's error, whatever the
    /// broker did: a broker's answer crafted on real traffic.
    pub fn answer_produce_with(&self, code: i16, times: usize) {
        self.answer_with(PRODUCE, code, times);
    }

    /// The next `times` answers of `api_key` reach the client with `code`
    /// (a Kafka error code), whatever the broker did: Produce, Fetch and
    /// OffsetCommit answers as their first partition's error,
    /// ConsumerGroupHeartbeat answers as their own. Other APIs are passed
    /// as they are.
    pub fn answer_with(&self, api_key: i16, code: i16, times: usize) {
        self.rewrite
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(api_key, (code, times));
    }

    /// The next `times` Fetch answers reach the client with `code` as their
    /// first partition's error (its records still in the answer, which a
    /// client must not use), whatever the broker did.
    pub fn answer_fetch_with(&self, code: i16, times: usize) {
        self.answer_with(FETCH, code, times);
    }

    /// ApiVersions answers on connections opened from now on offer no
    /// version of `api_key` (a broker too old for it); `None` offers
    /// everything again.
    pub fn hide_api(&self, api_key: Option<i16>) {
        self.rewrite
            .hidden
            .store(api_key.map_or(-1, i32::from), Ordering::Relaxed);
    }

    /// How many client connections the proxy has accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// How many requests with Kafka API key `api_key` (0 Produce, 1 Fetch,
    /// 3 Metadata…) clients have sent through the proxy so far.
    pub fn requests(&self, api_key: i16) -> u64 {
        usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.counts.get(k))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Keeps every request with Kafka API key `api_key` that clients send
    /// from now on, whole, for [`kept_requests`](Self::kept_requests).
    pub fn keep_requests(&self, api_key: i16) {
        self.requests.kept().entry(api_key).or_default();
    }

    /// The requests with `api_key` kept so far, oldest first: each frame
    /// without its length prefix (the request header, then the body), to
    /// decode with the API version the header names.
    pub fn kept_requests(&self, api_key: i16) -> Vec<Vec<u8>> {
        self.requests
            .kept()
            .get(&api_key)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.settings.send_modify(|s| {
            s.shutdown = true;
            s.cut_epoch += 1;
        });
    }
}

/// What the proxy's thread shares with its handle.
#[derive(Clone)]
struct Watched {
    accepted: Arc<AtomicU64>,
    listening: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<RequestCounts>,
    rewrite: Arc<AnswerRewrite>,
}

async fn accept_loop(
    std_listener: std::net::TcpListener,
    address: SocketAddr,
    upstream: String,
    mut rx: watch::Receiver<Settings>,
    watched: Watched,
) {
    let Watched {
        accepted,
        listening,
        requests,
        rewrite,
    } = watched;
    let mut listener = TcpListener::from_std(std_listener).ok();
    let mut counted = true;
    loop {
        if counted != listener.is_some() {
            counted = listener.is_some();
            if counted {
                listening.fetch_add(1, Ordering::AcqRel);
            } else {
                listening.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let settings = *rx.borrow_and_update();
        if settings.shutdown {
            return;
        }
        match (settings.mode, listener.as_ref()) {
            (FaultMode::Refuse, Some(_)) => {
                listener = None;
                continue;
            }
            (FaultMode::Refuse, None) => {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            (_, None) => {
                listener = TcpListener::bind(address).await.ok();
                if listener.is_none() {
                    tracing::warn!(%address, "fault proxy could not listen again; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
            (_, Some(l)) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    conn = l.accept() => if let Ok((client, _)) = conn {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(connection(client, upstream.clone(), rx.clone(), Arc::clone(&requests), Arc::clone(&rewrite)));
                    },
                }
            }
        }
    }
}

/// Waits until the mode is not black-hole; false when the connection must close.
async fn wait_passable(rx: &mut watch::Receiver<Settings>, epoch: u64) -> bool {
    loop {
        let s = *rx.borrow_and_update();
        if s.shutdown || s.cut_epoch != epoch {
            return false;
        }
        if s.mode != FaultMode::BlackHole {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: String,
    mut rx: watch::Receiver<Settings>,
    requests: Arc<RequestCounts>,
    rewrite: Arc<AnswerRewrite>,
) {
    let (epoch, mode) = {
        let s = rx.borrow();
        (s.cut_epoch, s.mode)
    };
    if mode == FaultMode::Refuse || !wait_passable(&mut rx, epoch).await {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return; // the client sees a closed connection, as with a dead broker
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let produce = ProduceVersions::default();
    let to_broker = Direction::Requests {
        counts: requests,
        produce: Arc::clone(&produce),
    };
    let to_client = Direction::Answers { produce, rewrite };
    tokio::select! {
        _ = pump(cr, sw, rx.clone(), epoch, to_broker) => {},
        _ = pump(sr, cw, rx.clone(), epoch, to_client) => {},
    }
}

/// Which way a pump forwards, with what it watches on the way.
enum Direction {
    /// Client to broker: counts requests, notes Produce requests.
    Requests {
        counts: Arc<RequestCounts>,
        produce: ProduceVersions,
    },
    /// Broker to client: whole answers, Produce answers rewritten when
    /// asked.
    Answers {
        produce: ProduceVersions,
        rewrite: Arc<AnswerRewrite>,
    },
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<Settings>,
    epoch: u64,
    direction: Direction,
) {
    let mut scanner = FrameScanner::default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Answers pass whole, so one can be rewritten; what is not yet a
    // whole answer waits here.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        let n = tokio::select! {
            read = from.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            cut = cut_signal(rx.clone(), epoch) => { let () = cut; return }
        };
        let out: &[u8] = match &direction {
            Direction::Requests { counts, produce } => {
                scanner.feed(&buf[..n], counts, produce);
                &buf[..n]
            }
            Direction::Answers { produce, rewrite } => {
                pending.extend_from_slice(&buf[..n]);
                let whole = whole_frames(&pending);
                rewrite_answers(&mut pending[..whole], produce, rewrite);
                buf.clear();
                buf.extend(pending.drain(..whole));
                if rx.borrow().mode == FaultMode::LoseAnswers {
                    continue;
                }
                &buf[..]
            }
        };
        if !wait_passable(&mut rx, epoch).await {
            return;
        }
        let latency = rx.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(out).await.is_err() {
            return;
        }
    }
}

/// Resolves when the connection of `epoch` must close.
async fn cut_signal(mut rx: watch::Receiver<Settings>, epoch: u64) {
    loop {
        {
            let s = rx.borrow_and_update();
            if s.shutdown || s.cut_epoch != epoch {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
