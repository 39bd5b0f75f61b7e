//! Real traffic from inside lab namespaces: TCP connects, UDP exchanges
//! and pings, and the small TCP/UDP responders pods serve them with.

use super::netns;
use anyhow::Result;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

/// What a probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Connected,
    Blocked,
}

/// What a probe saw on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A TCP connection answered, a UDP reply or an echo reply came back.
    Connected,
    /// Nothing came back (the datapath dropped it).
    Blocked,
    /// An HTTP response with this status.
    Http(u16),
    /// A DNS response: [`DNS_ANSWERED`] (NOERROR or NXDOMAIN) or another
    /// rcode (5 = REFUSED).
    Dns(u16),
    /// A Kafka response: 0 when it carries no authorization error, else the
    /// authorization error (29/30/31/53, the proxy's denial); -1 when the
    /// connection closed without a well-formed response (see the wire runner's `kafka`).
    Kafka(i16),
}

/// A DNS answer from the server (NOERROR or NXDOMAIN).
pub const DNS_ANSWERED: u16 = 0;
/// REFUSED: the proxy's denial.
pub const DNS_REFUSED: u16 = 5;

impl Outcome {
    /// Whether the traffic got through (for HTTP: a 2xx).
    pub fn allowed(self) -> bool {
        match self {
            Outcome::Connected => true,
            Outcome::Blocked => false,
            Outcome::Http(s) => (200..300).contains(&s),
            Outcome::Dns(r) => r == DNS_ANSWERED,
            Outcome::Kafka(e) => e == 0,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Connected => f.write_str("connected"),
            Outcome::Blocked => f.write_str("blocked"),
            Outcome::Http(s) => write!(f, "http {s}"),
            Outcome::Dns(r) => write!(f, "dns rcode {r}"),
            Outcome::Kafka(0) => f.write_str("kafka answered"),
            Outcome::Kafka(-1) => f.write_str("kafka closed"),
            Outcome::Kafka(e) => write!(f, "kafka error {e}"),
        }
    }
}

/// An HTTP request sent with curl from inside a namespace.
pub struct HttpProbe<'a> {
    pub method: &'a str,
    /// Sent exactly as written (`--path-as-is`), query included.
    pub path: &'a str,
    pub host: Option<&'a str>,
    /// `Name: value` lines.
    pub headers: &'a [String],
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub h2: bool,
}

/// Sends one HTTP request with curl; `Blocked` when no response came
/// (connection dropped or timed out).
pub fn http(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    req: &HttpProbe<'_>,
    timeout: Duration,
) -> Result<Outcome> {
    let authority = match dst {
        IpAddr::V4(_) => format!("{dst}:{port}"),
        IpAddr::V6(_) => format!("[{dst}]:{port}"),
    };
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .args([
        "--path-as-is",
        "--max-time",
        &format!("{:.1}", timeout.as_secs_f64()),
    ])
    .args(["-X", req.method]);
    if req.h2 {
        cmd.arg("--http2-prior-knowledge");
    } else {
        cmd.arg("--http1.1");
    }
    if let Some(s) = src {
        cmd.args(["--interface", &s.to_string()]);
    }
    if let Some(h) = req.host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    for h in req.headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://{authority}{}", req.path))
        .stderr(Stdio::null())
        .output()?;
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(if code == 0 {
        Outcome::Blocked
    } else {
        Outcome::Http(code)
    })
}

/// One DNS query with `dig` (UDP, or TCP), from `ns`. NXDOMAIN counts as
/// answered; no response is `Blocked`.
pub fn dns(
    ns: &str,
    src: Option<IpAddr>,
    server: IpAddr,
    port: u16,
    name: &str,
    tcp: bool,
    timeout: Duration,
) -> Result<Outcome> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "dig",
        "+tries=1",
        "+noall",
        "+comments",
    ])
    .arg(format!("+time={}", timeout.as_secs().max(1)))
    .arg(format!("@{server}"))
    .args(["-p", &port.to_string()]);
    if tcp {
        cmd.arg("+tcp");
    }
    if let Some(s) = src {
        cmd.args(["-b", &s.to_string()]);
    }
    let out = cmd.arg(name).stderr(Stdio::null()).output()?;
    Ok(dig_outcome(&out.stdout))
}

/// Resolves `name` through `server` from `ns` as a client would before
/// connecting: an A query, or AAAA for an IPv6 destination (UDP).
pub fn resolve(
    ns: &str,
    server: IpAddr,
    port: u16,
    name: &str,
    v6: bool,
    timeout: Duration,
) -> Result<Outcome> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "dig",
            "+tries=1",
            "+noall",
            "+comments",
        ])
        .arg(format!("+time={}", timeout.as_secs().max(1)))
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string()])
        .args(["-t", if v6 { "AAAA" } else { "A" }])
        .arg(name)
        .stderr(Stdio::null())
        .output()?;
    Ok(dig_outcome(&out.stdout))
}

/// What `dig +comments` printed, as an outcome: its status line.
fn dig_outcome(stdout: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .map(str::trim);
    match status {
        None => Outcome::Blocked,
        Some("NOERROR") | Some("NXDOMAIN") => Outcome::Dns(DNS_ANSWERED),
        Some("REFUSED") => Outcome::Dns(DNS_REFUSED),
        Some("SERVFAIL") => Outcome::Dns(2),
        Some(_) => Outcome::Dns(1),
    }
}

/// A TCP connect plus one response byte, from namespace `ns`.
pub fn tcp(ns: &str, dst: IpAddr, port: u16, timeout: Duration) -> Result<Observed> {
    tcp_from(ns, None, dst, port, timeout)
}

/// A UDP request/response exchange, from namespace `ns`.
pub fn udp(ns: &str, dst: IpAddr, port: u16, timeout: Duration) -> Result<Observed> {
    udp_from(ns, None, dst, port, timeout)
}

fn bind_addr(src: Option<IpAddr>, dst: IpAddr) -> SocketAddr {
    match src {
        Some(ip) => SocketAddr::new(ip, 0),
        None if dst.is_ipv4() => "0.0.0.0:0".parse().expect("literal"),
        None => "[::]:0".parse().expect("literal"),
    }
}

/// A TCP connect from `src` (any local address when `None`) in `ns`, then
/// one response byte.
pub fn tcp_from(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Observed> {
    netns::in_netns(ns, move || {
        use socket2::{Domain, Socket, Type};
        let addr = SocketAddr::new(dst, port);
        let Ok(sock) = Socket::new(Domain::for_address(addr), Type::STREAM, None) else {
            return Observed::Blocked;
        };
        if src.is_some() && sock.bind(&bind_addr(src, dst).into()).is_err() {
            return Observed::Blocked;
        }
        match sock.connect_timeout(&addr.into(), timeout) {
            Ok(()) => {
                let mut s: TcpStream = sock.into();
                let _ = s.set_read_timeout(Some(timeout));
                // An HTTP server answers this; the echo responder answers
                // anything. Either way a byte back means "connected".
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 8];
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => Observed::Connected,
                    _ => Observed::Blocked,
                }
            }
            Err(_) => Observed::Blocked,
        }
    })
}

/// A UDP request/response exchange from `src` in `ns`.
pub fn udp_from(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<Observed> {
    netns::in_netns(ns, move || {
        let Ok(sock) = UdpSocket::bind(bind_addr(src, dst)) else {
            return Observed::Blocked;
        };
        let _ = sock.set_read_timeout(Some(timeout));
        if sock.send_to(b"probe", SocketAddr::new(dst, port)).is_err() {
            return Observed::Blocked;
        }
        let mut buf = [0u8; 64];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if n > 0 && from.ip() == dst => Observed::Connected,
            _ => Observed::Blocked,
        }
    })
}

/// One echo request with the system's `ping` from `ns` (from `src` when
/// given).
pub fn ping(ns: &str, src: Option<IpAddr>, dst: IpAddr, timeout: Duration) -> Result<Observed> {
    let secs = timeout.as_secs().max(1).to_string();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", &secs,
    ]);
    if let Some(s) = src {
        cmd.args(["-I", &s.to_string()]);
    }
    let status = cmd
        .arg(dst.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(if status.success() {
        Observed::Connected
    } else {
        Observed::Blocked
    })
}

/// What starts every raw-protocol probe message, before its kind byte
/// ([`RAW_REQUEST`] or [`RAW_REPLY`]) and an 8-byte nonce.
const RAW_MAGIC: &[u8; 7] = b"pc-raw:";
const RAW_REQUEST: u8 = b'q';
const RAW_REPLY: u8 = b'r';

/// A raw socket of IP protocol `protocol` (GRE, ESP, VRRP, ...): the
/// kernel writes the IP header, the payload is ours.
fn raw_socket(v6: bool, protocol: u8) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(protocol))))
}

/// The probe's payload. For IPIP (4) and IPv6-in-IP (41) it starts with
/// an inner IP header of that family (lab addresses, an experimental
/// protocol 253 that no stack answers), so the packet is what a tunnel
/// sends; the marker follows.
fn raw_payload(protocol: u8, nonce: u64) -> Vec<u8> {
    let marker_len = RAW_MAGIC.len() + 1 + 8;
    let mut p = Vec::new();
    match protocol {
        4 => {
            let total = (20 + marker_len) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 1, 0, 0, 64, 253, 0, 0]);
            p.extend_from_slice(&[10, 200, 255, 1, 10, 200, 255, 2]);
        }
        41 => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(marker_len as u16).to_be_bytes());
            p.extend_from_slice(&[253, 64]);
            for last in [1u8, 2] {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&[0xfd, 0, 2, 0]);
                a[12..].copy_from_slice(&[0, 0, 0xff, last]);
                p.extend_from_slice(&a);
            }
        }
        _ => {}
    }
    p.extend_from_slice(RAW_MAGIC);
    p.push(RAW_REQUEST);
    p.extend_from_slice(&nonce.to_be_bytes());
    p
}

/// Where a raw-protocol probe message of `kind` starts in `buf` (which
/// holds the IPv4 header too for IPv4 raw sockets), and its nonce.
fn raw_message(buf: &[u8], kind: u8) -> Option<(usize, u64)> {
    let at = buf
        .windows(RAW_MAGIC.len() + 1)
        .position(|w| w[..RAW_MAGIC.len()] == RAW_MAGIC[..] && w[RAW_MAGIC.len()] == kind)?;
    let nonce_at = at + RAW_MAGIC.len() + 1;
    let nonce = buf.get(nonce_at..nonce_at + 8)?;
    Some((at, u64::from_be_bytes(nonce.try_into().ok()?)))
}

fn raw_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ (u64::from(std::process::id()) << 32) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The source address of a datagram read from a raw socket.
fn raw_recv(sock: &socket2::Socket, buf: &mut [u8]) -> std::io::Result<(usize, Option<IpAddr>)> {
    use nix::sys::socket::{SockaddrLike, SockaddrStorage, recvfrom};
    use std::os::fd::AsRawFd;
    let (n, from) = recvfrom::<SockaddrStorage>(sock.as_raw_fd(), buf)?;
    let ip = from.and_then(|a| match a.family() {
        Some(nix::sys::socket::AddressFamily::Inet) => {
            a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))
        }
        Some(nix::sys::socket::AddressFamily::Inet6) => {
            a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip()))
        }
        _ => None,
    });
    Ok((n, ip))
}

/// One packet of IP protocol `protocol` (an extended protocol of a
/// policy: VRRP, IGMP, GRE, IPIP, IPv6-in-IP, ESP, AH) from `src` in `ns`
/// to `dst`, whose raw responder ([`serve_raw`]) sends the same protocol
/// back: `Connected` when that reply arrives, so both the packet and its
/// reply crossed the datapath.
pub fn raw(
    ns: &str,
    src: Option<IpAddr>,
    dst: IpAddr,
    protocol: u8,
    timeout: Duration,
) -> Result<Observed> {
    netns::in_netns(ns, move || {
        raw_exchange(src, dst, protocol, timeout).unwrap_or(Observed::Blocked)
    })
}

fn raw_exchange(
    src: Option<IpAddr>,
    dst: IpAddr,
    protocol: u8,
    timeout: Duration,
) -> std::io::Result<Observed> {
    let sock = raw_socket(dst.is_ipv6(), protocol)?;
    if let Some(ip) = src {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let nonce = raw_nonce();
    sock.send_to(
        &raw_payload(protocol, nonce),
        &SocketAddr::new(dst, 0).into(),
    )?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(Observed::Blocked);
        }
        sock.set_read_timeout(Some(left))?;
        match raw_recv(&sock, &mut buf) {
            Ok((n, from)) => {
                let data = buf.get(..n).unwrap_or_default();
                if from == Some(dst)
                    && raw_message(data, RAW_REPLY).is_some_and(|(_, m)| m == nonce)
                {
                    return Ok(Observed::Connected);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Answers raw-protocol probes ([`raw`]) of each of `protocols` until
/// killed: a probe message is sent back, same protocol, same payload, as a
/// reply, to its sender. With `bind` addresses, one socket per address (so
/// a namespace with several answers from the address that was probed),
/// else the wildcard of each family. Anything else that arrives is
/// ignored. The threads run until the process ends.
pub fn serve_raw(protocols: &[u8], bind: &[IpAddr]) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let addrs: Vec<(bool, Option<IpAddr>)> = if bind.is_empty() {
        vec![(false, None), (true, None)]
    } else {
        bind.iter().map(|ip| (ip.is_ipv6(), Some(*ip))).collect()
    };
    let mut threads = Vec::new();
    for &protocol in protocols {
        for &(v6, addr) in &addrs {
            let sock = raw_socket(v6, protocol)?;
            if let Some(ip) = addr {
                sock.bind(&SocketAddr::new(ip, 0).into())?;
            }
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    let (n, from) = match raw_recv(&sock, &mut buf) {
                        Ok((n, Some(from))) => (n, from),
                        Ok((_, None)) => continue,
                        // Not a spin on a broken socket.
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    let data = buf.get(..n).unwrap_or_default();
                    let Some((at, _)) = raw_message(data, RAW_REQUEST) else {
                        continue;
                    };
                    // IPv4 raw sockets read the IP header too: answer
                    // with the payload only (inner header included).
                    let start = if v6 {
                        0
                    } else {
                        usize::from(data.first().map_or(5, |b| b & 0x0f)) * 4
                    };
                    let Some(payload) = data.get(start..) else {
                        continue;
                    };
                    let Some(kind_at) = at.checked_sub(start) else {
                        continue;
                    };
                    let mut reply = payload.to_vec();
                    if let Some(kind) = reply.get_mut(kind_at + RAW_MAGIC.len()) {
                        *kind = RAW_REPLY;
                    }
                    let _ = sock.send_to(&reply, &SocketAddr::new(from, 0).into());
                }
            }));
        }
    }
    Ok(threads)
}

/// Serves the given TCP and UDP ports on every address (IPv4 and IPv6)
/// until killed: TCP answers `ok\n` then echoes, UDP echoes.
/// UDP is answered from the address the request was sent to when that
/// address is in `udp_bind` (one socket per address), so a namespace with
/// several addresses replies from the right one.
pub fn serve(tcp_ports: &[u16], udp_ports: &[u16], udp_bind: &[IpAddr]) -> Result<()> {
    let mut threads = Vec::new();
    for &p in tcp_ports {
        for addr in [format!("0.0.0.0:{p}"), format!("[::]:{p}")] {
            let l = bind_tcp(&addr)?;
            threads.push(std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    // Answer `ok`, then echo until the client closes, so a
                    // connection can stay established across a test.
                    std::thread::spawn(move || {
                        let mut s = s;
                        if s.write_all(b"ok\n").is_err() {
                            return;
                        }
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }));
        }
    }
    for &p in udp_ports {
        let addrs: Vec<String> = if udp_bind.is_empty() {
            vec![format!("0.0.0.0:{p}"), format!("[::]:{p}")]
        } else {
            udp_bind
                .iter()
                .map(|ip| SocketAddr::new(*ip, p).to_string())
                .collect()
        };
        for addr in addrs {
            let sock = bind_udp(&addr)?;
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn v6only(addr: &str) -> bool {
    addr.starts_with('[')
}

fn bind_tcp(addr: &str) -> Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sa: SocketAddr = addr.parse()?;
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
    if v6only(addr) {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&sa.into())?;
    s.listen(128)?;
    Ok(s.into())
}

fn bind_udp(addr: &str) -> Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sa: SocketAddr = addr.parse()?;
    let s = Socket::new(Domain::for_address(sa), Type::DGRAM, None)?;
    if v6only(addr) {
        s.set_only_v6(true)?;
    }
    s.bind(&sa.into())?;
    Ok(s.into())
}

/// Result of a request/response run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RrResult {
    pub transactions: u64,
    pub seconds: f64,
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Request/response over `connections` TCP connections from namespace `ns`
/// to an echo responder: one `size`-byte request, wait for the echo,
/// repeat, for `duration`.
pub fn request_response(
    ns: &str,
    dst: SocketAddr,
    connections: usize,
    size: usize,
    duration: Duration,
) -> Result<RrResult> {
    let mut handles = Vec::new();
    for _ in 0..connections.max(1) {
        let ns = ns.to_string();
        handles.push(std::thread::spawn(move || -> Result<Vec<u32>> {
            let stream = netns::in_netns(&ns, move || {
                TcpStream::connect_timeout(&dst, Duration::from_secs(2))
            })??;
            let mut s = stream;
            s.set_nodelay(true)?;
            let mut hello = [0u8; 3];
            s.read_exact(&mut hello)?;
            let req = vec![b'x'; size];
            let mut resp = vec![0u8; size];
            let mut lat = Vec::new();
            let start = std::time::Instant::now();
            while start.elapsed() < duration {
                let t = std::time::Instant::now();
                s.write_all(&req)?;
                s.read_exact(&mut resp)?;
                lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("rr thread panicked"))??,
        );
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            0.0
        } else {
            f64::from(all[((all.len() - 1) as f64 * p) as usize]) / 1000.0
        }
    };
    let secs = duration.as_secs_f64();
    Ok(RrResult {
        transactions: all.len() as u64,
        seconds: secs,
        rate: all.len() as f64 / secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}
