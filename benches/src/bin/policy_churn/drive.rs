//! Changes and what sees them: the flip edits probed from the client pod,
//! the remote pod changes, and the agent's realization metric.

use crate::generate::GenConfig;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The histogram the agent exports per realized change.
pub const REALIZATION: &str = "portcullis_policy_realization_seconds";

#[derive(Debug, clap::Args)]
pub struct MetricArgs {
    /// The agent's admin endpoint, in the lab's node namespace.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub admin: SocketAddr,
    /// The namespace the admin endpoint is reachable from.
    #[arg(long, default_value = portcullis_lab::NODE_NS)]
    pub admin_netns: String,
    /// How long to wait for the metric to count a change.
    #[arg(long, default_value_t = 5000)]
    pub metric_wait_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// The client pod's namespace (`pc-podN`).
    #[arg(long)]
    pub netns: String,
    /// The server's `IP:PORT` the probes connect to.
    #[arg(long)]
    pub dst: SocketAddr,
    /// The policy file to rewrite.
    #[arg(long)]
    pub file: PathBuf,
    /// Its version under which the probe connects.
    #[arg(long)]
    pub allow: PathBuf,
    /// Its version under which the probe is dropped.
    #[arg(long)]
    pub deny: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Connect timeout of one probe (a drop is seen after it).
    #[arg(long, default_value_t = 20)]
    pub probe_timeout_ms: u64,
    /// Give up on one edit after this long.
    #[arg(long, default_value_t = 60)]
    pub max_wait_s: u64,
    #[command(flatten)]
    pub metric: MetricArgs,
}

#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The topology file to rewrite.
    #[arg(long)]
    pub topology: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Pause after a change the metric cannot confirm (an agent without it).
    #[arg(long, default_value_t = 50)]
    pub unconfirmed_pause_ms: u64,
    #[command(flatten)]
    pub metric: MetricArgs,
    #[command(flatten)]
    pub cfg: GenConfig,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[arg(long)]
    pub netns: String,
    #[arg(long)]
    pub dst: SocketAddr,
    /// `allow` or `deny`.
    #[arg(long)]
    pub verdict: String,
    #[arg(long, default_value_t = 20)]
    pub probe_timeout_ms: u64,
    #[arg(long, default_value_t = 60)]
    pub max_wait_s: u64,
}

/// One TCP probe: connect, then one byte back (the `lab serve` responder
/// answers `ok`). The socket closes with a reset, so no TIME_WAIT reuses
/// a tuple.
pub fn probe(dst: SocketAddr, timeout: Duration) -> bool {
    use socket2::{Domain, Socket, Type};
    let Ok(sock) = Socket::new(Domain::for_address(dst), Type::STREAM, None) else {
        return false;
    };
    let _ = sock.set_linger(Some(Duration::ZERO));
    if sock.connect_timeout(&dst.into(), timeout).is_err() {
        return false;
    }
    let mut s: TcpStream = sock.into();
    let _ = s.set_read_timeout(Some(timeout));
    let mut b = [0u8; 4];
    matches!(s.read(&mut b), Ok(n) if n > 0)
}

/// Sum and count of the realization histogram (all label sets), or
/// `None` when the agent does not export it.
pub fn realization(text: &str) -> Option<(f64, u64)> {
    let (mut sum, mut count, mut seen) = (0.0, 0u64, false);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let base = name.split('{').next().unwrap_or(name);
        if base == format!("{REALIZATION}_sum") {
            sum += value.parse::<f64>().unwrap_or(0.0);
            seen = true;
        } else if base == format!("{REALIZATION}_count") {
            count += value.parse::<f64>().unwrap_or(0.0) as u64;
            seen = true;
        }
    }
    seen.then_some((sum, count))
}

/// Scrapes the admin endpoint from a thread living in its namespace.
struct Scraper {
    tx: mpsc::Sender<mpsc::Sender<Result<String>>>,
}

impl Scraper {
    fn start(args: &MetricArgs) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<mpsc::Sender<Result<String>>>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (ns, addr) = (args.admin_netns.clone(), args.admin);
        std::thread::spawn(move || {
            let entered = portcullis_lab::netns::enter(&ns).map_err(|e| e.to_string());
            let _ = ready_tx.send(entered);
            for reply in rx {
                let _ = reply.send(scrape(addr));
            }
        });
        ready_rx
            .recv()
            .context("scraper thread")?
            .map_err(anyhow::Error::msg)?;
        Ok(Scraper { tx })
    }

    fn get(&self) -> Result<String> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(tx).context("scraper gone")?;
        rx.recv().context("scraper gone")?
    }

    fn realization(&self) -> Option<(f64, u64)> {
        self.get().ok().and_then(|t| realization(&t))
    }

    /// Waits until the histogram counts more than `before`; the change's
    /// realization seconds (sum delta / count delta) and the count delta.
    fn wait_counted(&self, before: Option<(f64, u64)>, wait: Duration) -> Option<(f64, u64)> {
        let (s0, c0) = before?;
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Some((s, c)) = self.realization()
                && c > c0
            {
                return Some(((s - s0) / (c - c0) as f64, c - c0));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }
}

fn scrape(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Replaces `path` with `content` atomically (a temporary file next to the
/// directory it is in, then a rename), as editors and config syncers do:
/// the agent never reads a half-written file.
pub fn replace_file(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file in a directory")?;
    let name = path.file_name().context("a file name")?.to_string_lossy();
    // Outside the directory: a policy directory's loader would read it.
    let tmp = dir
        .parent()
        .unwrap_or(dir)
        .join(format!(".{name}.churn-tmp"));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Probes until the verdict is `want`; the start time of the first probe
/// that saw it (it was in force by then), or `None` after `max`. A connect
/// is awaited by [`PROBERS`] staggered probers; a drop is only taken when
/// [`DROP_STREAK`] probes in a row see it: on a loaded machine one connect
/// can miss its timeout without any policy change.
fn first_probe_seeing(
    dst: SocketAddr,
    want: bool,
    timeout: Duration,
    max: Duration,
) -> Option<Instant> {
    if want {
        return first_connect(dst, timeout, max);
    }
    let start = Instant::now();
    let mut streak: Option<(Instant, usize)> = None;
    while start.elapsed() < max {
        let t = Instant::now();
        if probe(dst, timeout) {
            streak = None;
            continue;
        }
        let (first, n) = streak.map_or((t, 1), |(f, n)| (f, n + 1));
        if n >= DROP_STREAK {
            return Some(first);
        }
        streak = Some((first, n));
    }
    None
}

/// Probers that wait for a connect, started [`PROBERS`]-th of the timeout
/// apart: while probes are dropped each one waits out its timeout, so one
/// prober alone would see an allow up to a whole timeout late.
pub const PROBERS: u32 = 4;

/// The start of the earliest probe that connected, or `None` after `max`.
/// Threads started here stay in the caller's network namespace.
fn first_connect(dst: SocketAddr, timeout: Duration, max: Duration) -> Option<Instant> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let start = Instant::now();
    let found: Mutex<Option<Instant>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for k in 0..PROBERS {
            let (found, done) = (&found, &done);
            s.spawn(move || {
                std::thread::sleep(timeout * k / PROBERS);
                // A probe in flight is finished before looking at `done`, so
                // one that started earlier than the first success counts.
                while !done.load(Ordering::Relaxed) && start.elapsed() < max {
                    let t = Instant::now();
                    if probe(dst, timeout) {
                        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                        if f.is_none_or(|x| t < x) {
                            *f = Some(t);
                        }
                        done.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Consecutive dropped probes that make a "drop" verdict.
pub const DROP_STREAK: usize = 3;

pub fn edits(a: &EditArgs) -> Result<()> {
    let allow = std::fs::read(&a.allow).with_context(|| format!("{}", a.allow.display()))?;
    let deny = std::fs::read(&a.deny).with_context(|| format!("{}", a.deny.display()))?;
    let scraper = Scraper::start(&a.metric)?;
    // Probes come from the client pod: this thread moves there (the
    // scraper's thread stays in the node namespace).
    portcullis_lab::netns::enter(&a.netns)?;
    let timeout = Duration::from_millis(a.probe_timeout_ms);
    let max = Duration::from_secs(a.max_wait_s);
    let mut state = probe(a.dst, timeout);
    for i in 0..a.count {
        // The previous verdict must hold before the next write.
        if first_probe_seeing(a.dst, state, timeout, max).is_none() {
            bail!("edit {i}: the verdict before the write is not {state}");
        }
        let want = !state;
        let before = scraper.realization();
        replace_file(&a.file, if want { &allow } else { &deny })?;
        let written = Instant::now();
        let seen = first_probe_seeing(a.dst, want, timeout, max);
        let write_to_probe = seen.map(|t| ms(t.saturating_duration_since(written)));
        let realized = scraper.wait_counted(before, Duration::from_millis(a.metric.metric_wait_ms));
        println!(
            "{}",
            json!({
                "edit": i,
                "to": if want { "allow" } else { "deny" },
                "write_to_probe_ms": write_to_probe,
                "realization_ms": realized.map(|(s, _)| s * 1e3),
                "realizations_counted": realized.map(|(_, c)| c),
                "metric": before.is_some(),
            })
        );
        if seen.is_none() {
            bail!("edit {i}: no probe saw {want} within {} s", a.max_wait_s);
        }
        state = want;
    }
    Ok(())
}

pub fn remote(a: &RemoteArgs) -> Result<()> {
    let scraper = Scraper::start(&a.metric)?;
    let wait = Duration::from_millis(a.metric.metric_wait_ms);
    for k in 0..a.count {
        let change = crate::generate::remote_change(&a.cfg, k);
        let text = a.cfg.topology_yaml(k + 1);
        let before = scraper.realization();
        replace_file(&a.topology, text.as_bytes())?;
        let written = Instant::now();
        let realized = scraper.wait_counted(before, wait);
        let seen = realized.map(|_| ms(written.elapsed()));
        if before.is_none() {
            std::thread::sleep(Duration::from_millis(a.unconfirmed_pause_ms));
        }
        println!(
            "{}",
            json!({
                "change": k,
                "what": format!("{change:?}"),
                "realization_ms": realized.map(|(s, _)| s * 1e3),
                "realizations_counted": realized.map(|(_, c)| c),
                "write_to_metric_ms": seen,
                "metric": before.is_some(),
            })
        );
    }
    Ok(())
}

pub fn probe_until(a: &ProbeArgs) -> Result<()> {
    let want = match a.verdict.as_str() {
        "allow" => true,
        "deny" => false,
        v => bail!("--verdict is allow or deny, not {v:?}"),
    };
    portcullis_lab::netns::enter(&a.netns)?;
    let start = Instant::now();
    match first_probe_seeing(
        a.dst,
        want,
        Duration::from_millis(a.probe_timeout_ms),
        Duration::from_secs(a.max_wait_s),
    ) {
        Some(t) => {
            println!("{:.3}", ms(t.saturating_duration_since(start)));
            Ok(())
        }
        None => bail!("no probe saw {} within {} s", a.verdict, a.max_wait_s),
    }
}
