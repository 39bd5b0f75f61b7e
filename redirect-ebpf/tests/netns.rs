//! Real traffic through the attached programs (root only).
//!
//! Lab: a node namespace and two pod namespaces joined to it by veths
//! (`va` <-> A's `eth0`, `vb` <-> B's `eth0`), IPv4 and IPv6, the node
//! routing between them. The programs are attached to `va` and `vb`.
//! Namespaces are entered with `setns` on a dedicated thread, so the
//! private bpffs of the test stays visible. Everything is removed on drop.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use common::{PinDir, root_or_skip, unique};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
};
use redirect_ebpf::{
    Datapath, Direction, EVENT_AUDIT, EVENT_FORWARDED, EVENT_REDIRECTED, EndpointInfo, Hook,
    PolicyChange, PolicyKey, PolicyValue, Reason, install_proxy_routing,
};

const A4: &str = "10.200.1.2";
const B4: &str = "10.200.2.2";
const A6: &str = "fd00:200::a:2";
const B6: &str = "fd00:200::b:2";
const EP_A: u16 = 21;
const EP_B: u16 = 22;
const ID_A: u32 = 2001;
const ID_B: u32 = 2002;
const PROXY_PORT: u16 = 15001;

fn sh(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        Self { name }
    }

    /// Runs `f` on a fresh thread that has entered this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns =
                    std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns");
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// `ping` from inside the namespace; true when a reply came back.
    fn ping(&self, dst: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c1", "-W1", dst])
            .output()
            .expect("spawn ping")
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Node + two pods, programs attached, endpoints registered.
struct Lab {
    dp: Datapath,
    a: Netns,
    b: Netns,
    node: Netns,
    _pins: PinDir,
}

impl Lab {
    fn new() -> Self {
        let pins = PinDir::new();
        let node = Netns::new("pcnode");
        let a = Netns::new("pca");
        let b = Netns::new("pcb");
        node.ip(&["link", "set", "lo", "up"]);
        for (pod, veth, v4net, v6net) in [(&a, "va", "1", "a"), (&b, "vb", "2", "b")] {
            node.ip(&[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            node.ip(&["addr", "add", &format!("10.200.{v4net}.1/24"), "dev", veth]);
            node.ip(&[
                "addr",
                "add",
                &format!("fd00:200::{v6net}:1/112"),
                "dev",
                veth,
                "nodad",
            ]);
            node.ip(&["link", "set", veth, "up"]);
            pod.ip(&["link", "set", "lo", "up"]);
            pod.ip(&[
                "addr",
                "add",
                &format!("10.200.{v4net}.2/24"),
                "dev",
                "eth0",
            ]);
            pod.ip(&[
                "addr",
                "add",
                &format!("fd00:200::{v6net}:2/112"),
                "dev",
                "eth0",
                "nodad",
            ]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("10.200.{v4net}.1"),
            ]);
            pod.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:200::{v6net}:1"),
            ]);
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &node.name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);

        let mut dp = Datapath::load(pins.path()).expect("load datapath");
        let (index_a, index_b) = node.run(|| {
            dp.attach_pod("va").expect("attach va");
            dp.attach_pod("vb").expect("attach vb");
            (
                nix::net::if_::if_nametoindex("va").expect("va index"),
                nix::net::if_::if_nametoindex("vb").expect("vb index"),
            )
        });
        for (ips, endpoint_id, identity, ifindex) in [
            ([A4, A6], EP_A, ID_A, index_a),
            ([B4, B6], EP_B, ID_B, index_b),
        ] {
            for ip in ips {
                dp.set_endpoint(
                    ip.parse().expect("ip"),
                    EndpointInfo {
                        identity,
                        ifindex,
                        endpoint_id,
                        flags: 0,
                    },
                )
                .expect("set endpoint");
            }
        }
        Lab {
            dp,
            a,
            b,
            node,
            _pins: pins,
        }
    }

    /// Allows A -> B on `proto`/`port` on both sides (optionally redirected).
    fn allow_a_to_b(&mut self, proto: u8, port: u16, value: PolicyValue) {
        let egress = PolicyKey::new(ID_B, EP_A, Direction::Egress, proto, port, 16).unwrap();
        let ingress = PolicyKey::new(ID_A, EP_B, Direction::Ingress, proto, port, 16).unwrap();
        self.dp
            .apply_policy(&[
                PolicyChange::Upsert(egress, value),
                PolicyChange::Upsert(ingress, PolicyValue::allow(value.rule_cookie)),
            ])
            .expect("apply policy");
    }
}

/// Listens on `addr` in the calling thread's namespace.
fn listen_on(addr: SocketAddr, transparent: bool) -> TcpListener {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).expect("IPV6_V6ONLY");
    }
    if transparent {
        setsockopt(&fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )
    .expect("bind");
    listen(&fd, nix::sys::socket::Backlog::new(16).expect("backlog")).expect("listen");
    TcpListener::from(fd)
}

/// Accepts connections forever, answering each with its local address.
fn serve_local_addr(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let local = stream.local_addr().expect("local addr");
            let _ = stream.write_all(local.to_string().as_bytes());
        }
    });
}

/// Connects from inside `ns` and reads the server's answer.
fn connect_and_read(ns: &Netns, dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    ns.run(|| {
        let mut stream = TcpStream::connect_timeout(&dst, timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port)
}

#[test]
fn tcp_and_ping_are_allowed_and_denied_v4_and_v6() {
    if !root_or_skip("tcp_and_ping_are_allowed_and_denied_v4_and_v6") {
        return;
    }
    let mut lab = Lab::new();
    lab.allow_a_to_b(6, 8080, PolicyValue::allow(1));
    lab.allow_a_to_b(1, 8, PolicyValue::allow(2));
    lab.allow_a_to_b(58, 128, PolicyValue::allow(3));

    for ip in [B4, B6] {
        for port in [8080, 9090] {
            serve_local_addr(lab.b.run(|| listen_on(sock(ip, port), false)));
        }
    }
    for ip in [B4, B6] {
        let answer = connect_and_read(&lab.a, sock(ip, 8080), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("A -> {ip}:8080 should be allowed: {e}"));
        assert_eq!(answer, sock(ip, 8080).to_string());
        let denied = connect_and_read(&lab.a, sock(ip, 9090), Duration::from_secs(1));
        assert_eq!(
            denied.as_ref().map_err(|e| e.kind()),
            Err(ErrorKind::TimedOut),
            "A -> {ip}:9090 should be dropped: {denied:?}"
        );
    }
    assert!(lab.a.ping(B4), "ping A -> B (IPv4) allowed");
    assert!(lab.a.ping(B6), "ping A -> B (IPv6) allowed");
    assert!(!lab.b.ping(A4), "ping B -> A (IPv4) denied");
    assert!(!lab.b.ping(A6), "ping B -> A (IPv6) denied");

    let counters = lab.dp.counters().expect("counters");
    assert!(counters.get(Reason::PassPolicy) >= 4, "{counters:?}");
    assert!(counters.get(Reason::PassReply) > 0, "{counters:?}");
    assert!(counters.get(Reason::DropNoPolicy) >= 4, "{counters:?}");
    let mut events = lab.dp.take_flow_events().expect("events");
    let all: Vec<_> = std::iter::from_fn(|| events.try_next()).collect();
    assert!(
        all.iter()
            .any(|e| e.is_drop() && e.dport == 9090 && e.hook() == Some(Hook::FromPod)),
        "a drop event for port 9090: {all:?}"
    );
    drop(lab);
}

#[test]
fn tproxy_redirect_reaches_a_transparent_listener() {
    if !root_or_skip("tproxy_redirect_reaches_a_transparent_listener") {
        return;
    }
    let mut lab = Lab::new();
    lab.allow_a_to_b(6, 8080, PolicyValue::redirect(PROXY_PORT, 77));
    let listeners = lab.node.run(|| {
        install_proxy_routing().expect("proxy routing");
        install_proxy_routing().expect("proxy routing is idempotent");
        [
            listen_on(sock("0.0.0.0", PROXY_PORT), true),
            listen_on(sock("::", PROXY_PORT), true),
        ]
    });
    let [v4, v6] = listeners;
    let proxy_v4 = v4.try_clone().expect("clone listener");
    let proxy_v6 = v6.try_clone().expect("clone listener");
    serve_local_addr(v4);
    serve_local_addr(v6);

    // The proxy's accepted socket carries the original destination.
    for ip in [B4, B6] {
        let answer = connect_and_read(&lab.a, sock(ip, 8080), Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("A -> {ip}:8080 should reach the proxy: {e}"));
        assert_eq!(
            answer,
            sock(ip, 8080).to_string(),
            "getsockname() at the proxy"
        );
    }
    let counters = lab.dp.counters().expect("counters");
    assert!(counters.get(Reason::Redirect) >= 2, "{counters:?}");
    let mut events = lab.dp.take_flow_events().expect("events");
    let all: Vec<_> = std::iter::from_fn(|| events.try_next()).collect();
    assert!(
        all.iter()
            .any(|e| e.redirected == 1 && e.proxy_port == PROXY_PORT && e.rule_cookie == 77),
        "a redirect event: {all:?}"
    );

    // No proxy on the redirect port (the accept threads above keep the
    // first listeners alive, so the policy moves to a port nobody listens
    // on): new connections are dropped, never let through to B, which does
    // listen on the original destination.
    drop((proxy_v4, proxy_v6));
    let b_server = lab.b.run(|| listen_on(sock(B4, 8080), false));
    lab.allow_a_to_b(6, 8080, PolicyValue::redirect(PROXY_PORT + 1, 78));
    lab.dp.flush_conntrack().expect("flush");
    let denied = connect_and_read(&lab.a, sock(B4, 8080), Duration::from_secs(1));
    assert!(denied.is_err(), "no proxy: must not reach B: {denied:?}");
    assert!(
        lab.dp
            .counters()
            .expect("counters")
            .get(Reason::DropProxyUnavailable)
            > 0
    );
    drop(b_server);
    drop(lab);
}

#[test]
fn an_audited_redirect_reaches_the_proxy_and_is_reported_twice() {
    if !root_or_skip("an_audited_redirect_reaches_the_proxy_and_is_reported_twice") {
        return;
    }
    let mut lab = Lab::new();
    // A's egress redirects to the proxy; an audited rule (cookie 77)
    // would drop the flow. B's ingress allows it (cookie 77 too).
    lab.allow_a_to_b(6, 8080, PolicyValue::redirect(PROXY_PORT, 77).audited());
    let listener = lab.node.run(|| {
        install_proxy_routing().expect("proxy routing");
        listen_on(sock("0.0.0.0", PROXY_PORT), true)
    });
    serve_local_addr(listener);
    let answer = connect_and_read(&lab.a, sock(B4, 8080), Duration::from_secs(3))
        .expect("A -> B:8080 should reach the proxy");
    assert_eq!(answer, sock(B4, 8080).to_string());
    let mut events = lab.dp.take_flow_events().expect("events");
    let all: Vec<_> = std::iter::from_fn(|| events.try_next()).collect();
    let new_flow: Vec<_> = all
        .iter()
        .filter(|e| e.hook() == Some(Hook::FromPod) && e.dport == 8080)
        .map(|e| {
            (
                e.verdict,
                e.reason(),
                e.endpoint_id,
                e.rule_cookie,
                e.proxy_port,
            )
        })
        .collect();
    assert_eq!(
        new_flow,
        [
            (
                EVENT_REDIRECTED,
                Some(Reason::Redirect),
                EP_A,
                77,
                PROXY_PORT
            ),
            (EVENT_FORWARDED, Some(Reason::PassPolicy), EP_B, 77, 0),
            (EVENT_AUDIT, Some(Reason::AuditDenied), EP_A, 77, PROXY_PORT),
        ],
        "{all:?}"
    );
    let counters = lab.dp.counters().expect("counters");
    assert_eq!(counters.get(Reason::AuditDenied), 1, "{counters:?}");
    assert!(counters.get(Reason::Redirect) >= 1, "{counters:?}");
    drop(lab);
}

#[test]
fn only_the_destinations_redirect_is_reported_as_redirected() {
    if !root_or_skip("only_the_destinations_redirect_is_reported_as_redirected") {
        return;
    }
    let mut lab = Lab::new();
    // A's egress allows (cookie 5), B's ingress redirects (cookie 6).
    // (BPF_PROG_TEST_RUN cannot assign a socket: a redirect needs real
    // TC ingress.)
    let egress = PolicyKey::new(ID_B, EP_A, Direction::Egress, 6, 8080, 16).unwrap();
    let ingress = PolicyKey::new(ID_A, EP_B, Direction::Ingress, 6, 8080, 16).unwrap();
    lab.dp
        .apply_policy(&[
            PolicyChange::Upsert(egress, PolicyValue::allow(5)),
            PolicyChange::Upsert(ingress, PolicyValue::redirect(PROXY_PORT, 6)),
        ])
        .expect("apply policy");
    let listener = lab.node.run(|| {
        install_proxy_routing().expect("proxy routing");
        listen_on(sock("0.0.0.0", PROXY_PORT), true)
    });
    serve_local_addr(listener);
    let answer = connect_and_read(&lab.a, sock(B4, 8080), Duration::from_secs(3))
        .expect("A -> B:8080 should reach the proxy");
    assert_eq!(answer, sock(B4, 8080).to_string());
    let mut events = lab.dp.take_flow_events().expect("events");
    let all: Vec<_> = std::iter::from_fn(|| events.try_next()).collect();
    let mut new_flow: Vec<_> = all
        .iter()
        .filter(|e| e.hook() == Some(Hook::FromPod) && e.dport == 8080)
        .map(|e| {
            (
                e.verdict,
                e.reason(),
                e.endpoint_id,
                e.direction,
                e.rule_cookie,
                e.proxy_port,
            )
        })
        .collect();
    // In either order (the side conntrack keeps, here B's, comes first).
    new_flow.sort_by_key(|e| e.2);
    assert_eq!(
        new_flow,
        [
            (
                EVENT_FORWARDED,
                Some(Reason::PassPolicy),
                EP_A,
                Direction::Egress.code(),
                5,
                0
            ),
            (
                EVENT_REDIRECTED,
                Some(Reason::Redirect),
                EP_B,
                Direction::Ingress.code(),
                6,
                PROXY_PORT
            ),
        ],
        "{all:?}"
    );
    let counters = lab.dp.counters().expect("counters");
    assert!(counters.get(Reason::Redirect) >= 1, "{counters:?}");
    drop(lab);
}

/// Accepts connections forever, answering each with its peer's address.
fn serve_peer_addr(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let peer = stream.peer_addr().expect("peer addr");
            let _ = stream.write_all(peer.to_string().as_bytes());
        }
    });
}

/// From the node namespace, connects to B:8080 from A's address (as the
/// proxy's transparent upstream does) on a socket carrying `mark`, and
/// reads B's answer.
fn node_connect_as_a(lab: &Lab, mark: u32) -> std::io::Result<String> {
    lab.node.run(|| {
        install_proxy_routing().expect("proxy routing");
        let fd: OwnedFd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        setsockopt(&fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
        setsockopt(&fd, sockopt::Mark, &mark).expect("SO_MARK");
        let timeout = nix::sys::time::TimeVal::new(2, 0);
        setsockopt(&fd, sockopt::SendTimeout, &timeout).expect("SO_SNDTIMEO");
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).expect("SO_RCVTIMEO");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        bind(raw, &SockaddrStorage::from(sock(A4, 0))).expect("bind to the client's address");
        nix::sys::socket::connect(raw, &SockaddrStorage::from(sock(B4, 8080)))
            .map_err(std::io::Error::from)?;
        let mut stream = TcpStream::from(fd);
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

/// The cgroup (v2) this test process runs in.
fn own_cgroup_id() -> u64 {
    let dir = redirect_ebpf::cgroup::cgroup2_mount()
        .expect("cgroup2 mount")
        .join(
            redirect_ebpf::cgroup::own_cgroup()
                .expect("own cgroup")
                .trim_start_matches('/'),
        );
    redirect_ebpf::cgroup::cgroup_id(&dir).expect("cgroup id")
}

#[test]
fn proxy_upstream_keeps_the_client_address_and_gets_its_replies() {
    if !root_or_skip("proxy_upstream_keeps_the_client_address_and_gets_its_replies") {
        return;
    }
    let mut lab = Lab::new();
    // No policy at all for A -> B: only the proxy's mark, on a socket of
    // the proxy's cgroup (here: this test process's), lets this through.
    serve_peer_addr(lab.b.run(|| listen_on(sock(B4, 8080), false)));
    lab.dp
        .set_proxy_cgroup(own_cgroup_id())
        .expect("proxy cgroup");
    let from_proxy_mark = lab.dp.config().expect("config").from_proxy_mark;
    let answer = node_connect_as_a(&lab, from_proxy_mark).expect("upstream connection");
    assert!(
        answer.starts_with(&format!("{A4}:")),
        "B saw the client's address: {answer}"
    );
    // A itself still cannot reach B: the mark, not the address, let it in.
    let denied = connect_and_read(&lab.a, sock(B4, 8080), Duration::from_secs(1));
    assert!(denied.is_err(), "A -> B without policy: {denied:?}");
    drop(lab);
}

/// Issue 13, finding 7: a node process (CAP_NET_RAW is enough for SO_MARK)
/// sets the from-proxy mark, or the policy-done mark, on its own socket.
#[test]
fn forged_marks_from_a_node_socket_do_not_pass_a_deny_all_ingress() {
    if !root_or_skip("forged_marks_from_a_node_socket_do_not_pass_a_deny_all_ingress") {
        return;
    }
    let mut lab = Lab::new();
    serve_peer_addr(lab.b.run(|| listen_on(sock(B4, 8080), false)));
    // The proxy's cgroup is another one: this process is not the proxy.
    let cgroup = redirect_ebpf::cgroup::cgroup2_mount()
        .expect("cgroup2 mount")
        .join(unique("portcullis-test-proxy-"));
    std::fs::create_dir(&cgroup).expect("create a cgroup");
    let proxy_id = redirect_ebpf::cgroup::cgroup_id(&cgroup).expect("cgroup id");
    lab.dp.set_proxy_cgroup(proxy_id).expect("proxy cgroup");
    let from_proxy_mark = lab.dp.config().expect("config").from_proxy_mark;
    let forged = node_connect_as_a(&lab, from_proxy_mark);
    let forged_done = node_connect_as_a(&lab, redirect_ebpf::MARK_POLICY_DONE);
    let counters = lab.dp.counters().expect("counters");
    let _ = std::fs::remove_dir(&cgroup);
    assert!(
        forged.is_err(),
        "a forged from-proxy mark passed B's deny-all ingress: {forged:?}"
    );
    assert!(
        forged_done.is_err(),
        "a forged policy-done mark passed B's deny-all ingress: {forged_done:?}"
    );
    assert!(counters.forged_marks >= 2, "{counters:?}");
    drop(lab);
}

#[test]
fn enforcement_outlives_the_agent_and_detach_removes_it() {
    if !root_or_skip("enforcement_outlives_the_agent_and_detach_removes_it") {
        return;
    }
    let mut lab = Lab::new();
    lab.allow_a_to_b(6, 8080, PolicyValue::allow(1));
    for port in [8080, 9090] {
        serve_local_addr(lab.b.run(|| listen_on(sock(B4, port), false)));
    }
    let reachable =
        |lab: &Lab, port| connect_and_read(&lab.a, sock(B4, port), Duration::from_secs(1)).is_ok();
    assert!(reachable(&lab, 8080));
    assert!(!reachable(&lab, 9090));

    // The agent goes away: every fd it held is closed.
    let pin_dir = lab.dp.pin_dir().to_path_buf();
    let placeholder = {
        let pins = PinDir::new();
        let dp = Datapath::load(pins.path()).expect("placeholder datapath");
        (dp, pins)
    };
    drop(std::mem::replace(&mut lab.dp, placeholder.0));
    assert!(reachable(&lab, 8080), "still allowed with the agent down");
    assert!(!reachable(&lab, 9090), "still enforced with the agent down");

    // The agent comes back: same maps, links switched to the new programs.
    lab.dp = Datapath::load(&pin_dir).expect("reload from the pins");
    assert!(reachable(&lab, 8080));
    assert!(!reachable(&lab, 9090));
    lab.node.run(|| {
        lab.dp
            .attach_pod("va")
            .expect("re-attach replaces atomically")
    });
    assert!(!reachable(&lab, 9090));

    // Detaching removes enforcement from both veths.
    lab.node.run(|| {
        lab.dp.detach("va").expect("detach va");
        lab.dp.detach("vb").expect("detach vb");
    });
    // The kernel releases an unpinned link after an RCU grace period.
    let opened = (0..5).any(|_| reachable(&lab, 9090));
    assert!(opened, "no programs, no policy");
    drop(placeholder.1);
    drop(lab);
}

#[test]
fn udp_tproxy_redirect_keeps_the_original_destination() {
    use std::io::IoSliceMut;
    use std::net::UdpSocket;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};

    if !root_or_skip("udp_tproxy_redirect_keeps_the_original_destination") {
        return;
    }
    const UDP_PROXY_PORT: u16 = 15053;
    let mut lab = Lab::new();
    lab.allow_a_to_b(17, 53, PolicyValue::redirect(UDP_PROXY_PORT, 53));
    let udp_socket = |addr: SocketAddr| {
        let fd: OwnedFd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("udp socket");
        setsockopt(&fd, sockopt::IpTransparent, &true).expect("IP_TRANSPARENT");
        setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(addr),
        )
        .expect("bind");
        fd
    };
    let proxy = lab.node.run(|| {
        install_proxy_routing().expect("proxy routing");
        let fd = udp_socket(sock("0.0.0.0", UDP_PROXY_PORT));
        setsockopt(&fd, sockopt::Ipv4OrigDstAddr, &true).expect("IP_RECVORIGDSTADDR");
        fd
    });
    let client = lab.a.run(|| {
        let client = UdpSocket::bind(sock("0.0.0.0", 0)).expect("client socket");
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        client.connect(sock(B4, 53)).expect("connect");
        client.send(b"query").expect("send");
        client
    });

    // The proxy sees the query and where it was going.
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in);
    let (len, from, orig_dst) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<SockaddrIn>(
            std::os::fd::AsRawFd::as_raw_fd(&proxy),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .expect("recvmsg at the proxy");
        let orig_dst = msg
            .cmsgs()
            .expect("cmsgs")
            .find_map(|c| match c {
                ControlMessageOwned::Ipv4OrigDstAddr(addr) => Some(SockaddrIn::from(addr)),
                _ => None,
            })
            .expect("IP_ORIGDSTADDR");
        (msg.bytes, msg.address.expect("peer"), orig_dst)
    };
    assert_eq!(&buf[..len], b"query");
    assert_eq!(orig_dst.to_string(), sock(B4, 53).to_string());
    assert_eq!(from.ip(), A4.parse::<std::net::Ipv4Addr>().unwrap());

    // The answer goes out from the original destination (transparent).
    lab.node.run(|| {
        let answer = udp_socket(sock(B4, 53));
        nix::sys::socket::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&answer),
            b"answer",
            &from,
            MsgFlags::empty(),
        )
        .expect("send answer");
    });
    let mut reply = [0u8; 64];
    let n = client.recv(&mut reply).expect("answer reaches the client");
    assert_eq!(&reply[..n], b"answer");
    assert!(lab.dp.counters().expect("counters").get(Reason::Redirect) >= 1);
    drop(lab);
}
