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

/// A TCP connect plus one response byte, from namespace `ns`.
pub fn tcp(ns: &str, dst: IpAddr, port: u16, timeout: Duration) -> Result<Observed> {
    netns::in_netns(ns, move || {
        let addr = SocketAddr::new(dst, port);
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(timeout));
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

/// A UDP request/response exchange, from namespace `ns`.
pub fn udp(ns: &str, dst: IpAddr, port: u16, timeout: Duration) -> Result<Observed> {
    netns::in_netns(ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let Ok(sock) = UdpSocket::bind(bind) else {
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

/// One echo request with the system's `ping`, from namespace `ns`.
pub fn ping(ns: &str, dst: IpAddr, timeout: Duration) -> Result<Observed> {
    let secs = timeout.as_secs().max(1).to_string();
    let status = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", &secs,
        ])
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

/// Serves the given TCP and UDP ports on every address (IPv4 and IPv6)
/// until killed: TCP answers `ok\n` and closes, UDP echoes.
pub fn serve(tcp_ports: &[u16], udp_ports: &[u16]) -> Result<()> {
    let mut threads = Vec::new();
    for &p in tcp_ports {
        for addr in [format!("0.0.0.0:{p}"), format!("[::]:{p}")] {
            let l = bind_tcp(&addr)?;
            threads.push(std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    let mut s = s;
                    let _ = s.write_all(b"ok\n");
                }
            }));
        }
    }
    for &p in udp_ports {
        for addr in [format!("0.0.0.0:{p}"), format!("[::]:{p}")] {
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
