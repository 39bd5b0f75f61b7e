//! Shared helpers for the root-only tests: a private bpffs pin directory
//! removed on drop, synthetic packets, and `BPF_PROG_TEST_RUN`.

#![allow(dead_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::{TestRun, TestRunOptions};
use redirect_ebpf::{Datapath, Hook};

/// True when the test may load eBPF; otherwise prints why it is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    // Straight to stderr: the test harness would swallow eprintln!.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    );
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short name for namespaces and pin directories of this process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private bpffs mount for one test; unmounted and removed on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("portcullis-pins-"));
        std::fs::create_dir_all(&path).expect("create test pin dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Pins hold the maps and links; the detach unmount releases them.
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// Result of one program run.
#[derive(Debug)]
pub struct Run {
    pub retval: u32,
    pub mark: u32,
}

/// Runs the program of `hook` on `packet` with `skb->mark = mark`.
pub fn run(dp: &Datapath, hook: Hook, packet: &[u8], mark: u32) -> Run {
    const SKB_SIZE: usize = 192;
    const MARK_OFFSET: usize = 8;
    let mut ctx_in = [0u8; SKB_SIZE];
    ctx_in[MARK_OFFSET..MARK_OFFSET + 4].copy_from_slice(&mark.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_SIZE];
    let mut data_out = vec![0u8; packet.len() + 256];
    let result = dp
        .program(hook)
        .expect("program loaded")
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let mark = u32::from_ne_bytes(
        ctx_out[MARK_OFFSET..MARK_OFFSET + 4]
            .try_into()
            .expect("4 bytes"),
    );
    Run {
        retval: result.return_value,
        mark,
    }
}

/// Layer 4 of a synthetic packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6 (by the address family): type, code, identifier.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// ICMP error carrying `inner` (an IP packet without Ethernet header).
    IcmpError {
        ty: u8,
        inner: Vec<u8>,
    },
    /// Any other IP protocol (GRE, ESP, AH, ...) with these bytes after
    /// the IP header (and its extension headers).
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

/// A synthetic packet.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// IPv4 fragment offset in 8-byte units (0 = first fragment).
    pub fragment_offset: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv6 extension headers to insert, as (next-header code, 8-byte
    /// header body without its first two bytes).
    pub ipv6_ext: Vec<(u8, [u8; 6])>,
    /// IPv4 "more fragments" flag.
    pub more_fragments: bool,
    /// IPv4 identification.
    pub ip_id: u16,
    /// TCP flags (SYN by default).
    pub tcp_flags: u8,
    /// Keep only this many bytes of the layer 4 header and payload (a
    /// truncated, e.g. tiny first fragment); the IP lengths say so too.
    pub l4_len: Option<usize>,
}

pub fn packet(src: &str, dst: &str, l4: L4) -> Packet {
    Packet {
        src: src.parse().expect("src address"),
        dst: dst.parse().expect("dst address"),
        l4,
        fragment_offset: 0,
        ttl: 64,
        ipv6_ext: Vec::new(),
        more_fragments: false,
        ip_id: 1,
        tcp_flags: 0x02,
        l4_len: None,
    }
}

impl Packet {
    /// The packet as a frame (Ethernet + IP + L4 + a few payload bytes).
    pub fn frame(&self) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        let ip = self.ip_packet();
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame
    }

    /// The IP packet without Ethernet header.
    pub fn ip_packet(&self) -> Vec<u8> {
        let v4 = self.src.is_ipv4();
        let (proto, l4) = match &self.l4 {
            L4::Tcp { sport, dport } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, self.tcp_flags, 0xff, 0xff]);
                h.extend_from_slice(&[0, 0, 0, 0]);
                (6u8, h)
            }
            L4::Udp { sport, dport } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&[0, 12, 0, 0, b'p', b'c', b'!', b'!']);
                (17u8, h)
            }
            L4::Icmp { ty, code, id } => {
                let mut h = vec![*ty, *code, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&[0, 1]);
                (if v4 { 1u8 } else { 58u8 }, h)
            }
            L4::IcmpError { ty, inner } => {
                let mut h = vec![*ty, 0, 0, 0, 0, 0, 0, 0];
                h.extend_from_slice(inner);
                (if v4 { 1u8 } else { 58u8 }, h)
            }
            L4::Raw { proto, payload } => (*proto, payload.clone()),
        };
        let mut l4 = l4;
        if let Some(n) = self.l4_len {
            l4.truncate(n);
        }
        let mut p = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = (20 + l4.len()) as u16;
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&total.to_be_bytes());
                p.extend_from_slice(&self.ip_id.to_be_bytes());
                let more = if self.more_fragments { 0x2000 } else { 0 };
                p.extend_from_slice(&((self.fragment_offset & 0x1fff) | more).to_be_bytes());
                p.extend_from_slice(&[self.ttl, proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext_len = 8 * self.ipv6_ext.len();
                let first = self.ipv6_ext.first().map_or(proto, |(code, _)| *code);
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[first, self.ttl]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                for (i, (_, body)) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).map_or(proto, |(code, _)| *code);
                    p.extend_from_slice(&[next, 0]);
                    p.extend_from_slice(body);
                }
            }
            _ => panic!("mixed address families"),
        }
        p.extend_from_slice(&l4);
        p
    }
}
