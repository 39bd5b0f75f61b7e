#!/usr/bin/env python3
"""Crafted packets for agent/tests/attack_datapath.rs (issue 13).

Run inside a lab namespace (`portcullis lab exec TARGET -- python3 ...`).
Every subcommand is bounded in packets and time and prints one result
line the test parses. Destinations are lab addresses only (the test passes
them; nothing here picks an address).

  listen FAMILY PROTO SECONDS MARKER   count packets holding MARKER on a raw
                                       socket (PROTO: icmp, udp, tcp)
  icmp-error OSRC ODST ISRC IDST SPORT DPORT MARKER
                                       ICMP(v6) port unreachable from OSRC to
                                       ODST quoting UDP ISRC:SPORT->IDST:DPORT
  udp-send SRC DST DPORT SIZE COUNT MARKER [EXT]
                                       UDP datagrams (scapy, fragmented to 1400
                                       bytes when larger); SRC may be spoofed;
                                       EXT: IPv6 extension headers (e.g. 2)
  syn SRC SPORT DST DPORT              one SYN, prints "synack" or "none"
  frag-syn SRC SPORT DST DPORT N       a SYN (with 16 bytes of data) in two
                                       fragments (IPv4 or IPv6), the first
                                       holding N bytes of the TCP segment:
                                       "synack" or "none"
  overlap-udp SRC DST GOOD BAD MARKER  a first fragment to GOOD, then another
                                       offset-0 fragment to BAD, then the tail
  orphan-frag SRC DST MARKER           3 copies of a later UDP fragment (offset
                                       512) whose first fragment never comes
  sniff SECONDS MARKER                 count frames holding MARKER arriving on
                                       any interface (AF_PACKET: fragments
                                       too, before reassembly)
  udp-recv ADDR PORT SECONDS           sizes of the datagrams received
  udp-big DST PORT SIZE                one datagram from a plain socket
  connect-mark DST PORT MARK           TCP connect with SO_MARK: "connected"
                                       or "failed"
  flood DST PORT SECONDS               UDP datagrams as fast as one socket
                                       sends, for SECONDS: "sent N"
"""
import ipaddress
import socket
import sys
import time

SO_MARK = 36


def is_v6(addr):
    return ipaddress.ip_address(addr).version == 6


def listen(family, proto, seconds, marker):
    fam = socket.AF_INET6 if family == "6" else socket.AF_INET
    number = {
        "icmp": socket.IPPROTO_ICMPV6 if family == "6" else socket.IPPROTO_ICMP,
        "udp": socket.IPPROTO_UDP,
        "tcp": socket.IPPROTO_TCP,
    }[proto]
    s = socket.socket(fam, socket.SOCK_RAW, number)
    s.settimeout(0.2)
    end = time.monotonic() + float(seconds)
    seen = 0
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        if marker.encode() in data:
            seen += 1
    print(f"received {seen}", flush=True)


def icmp_error(osrc, odst, isrc, idst, sport, dport, marker):
    from scapy.all import ICMP, IP, UDP, IPv6, ICMPv6DestUnreach, send

    inner_l4 = UDP(sport=int(sport), dport=int(dport)) / marker.encode()
    if is_v6(osrc):
        pkt = IPv6(src=osrc, dst=odst) / ICMPv6DestUnreach(code=4) / IPv6(src=isrc, dst=idst) / inner_l4
    else:
        pkt = IP(src=osrc, dst=odst) / ICMP(type=3, code=3) / IP(src=isrc, dst=idst) / inner_l4
    send(pkt, count=3, inter=0.05, verbose=False)
    print("sent 3", flush=True)


def udp_send(src, dst, dport, size, count, marker, ext="0"):
    from scapy.all import UDP, IP, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, fragment, fragment6, IPv6ExtHdrFragment, send

    payload = (marker.encode() * (int(size) // len(marker) + 1))[: int(size)]
    l4 = UDP(sport=40000, dport=int(dport)) / payload
    if is_v6(dst):
        pkt = IPv6(src=src, dst=dst)
        for i in range(int(ext)):
            pkt = pkt / (IPv6ExtHdrHopByHop() if i == 0 else IPv6ExtHdrDestOpt())
        if len(l4) > 1200:
            pkts = fragment6(pkt / IPv6ExtHdrFragment() / l4, 1280)
        else:
            pkts = [pkt / l4]
    else:
        pkt = IP(src=src, dst=dst) / l4
        pkts = fragment(pkt, fragsize=1400) if len(pkt) > 1400 else [pkt]
    for _ in range(int(count)):
        send(pkts, verbose=False)
    print(f"sent {count} x {len(pkts)}", flush=True)


def syn(src, sport, dst, dport):
    from scapy.all import IP, TCP, IPv6, sr1

    ip = IPv6(src=src, dst=dst) if is_v6(dst) else IP(src=src, dst=dst)
    answer = sr1(ip / TCP(sport=int(sport), dport=int(dport), flags="S", seq=1000), timeout=2, verbose=False)
    synack = answer is not None and answer.haslayer(TCP) and (int(answer[TCP].flags) & 0x12) == 0x12
    print("synack" if synack else "none", flush=True)


def fragments(src, dst, proto, ident, pieces):
    """IPv4 or IPv6 fragments of one datagram: `pieces` are (offset in
    bytes, more-fragments flag, payload)."""
    from scapy.all import IP, IPv6, IPv6ExtHdrFragment

    out = []
    for offset, more, payload in pieces:
        if is_v6(dst):
            out.append(IPv6(src=src, dst=dst)
                       / IPv6ExtHdrFragment(id=ident, m=int(more), offset=offset // 8, nh=proto)
                       / payload)
        else:
            out.append(IP(src=src, dst=dst, id=ident, flags="MF" if more else 0,
                          frag=offset // 8, proto=proto) / payload)
    return out


def frag_syn(src, sport, dst, dport, first_bytes):
    from scapy.all import IP, TCP, IPv6, AsyncSniffer, raw, send

    n = int(first_bytes)
    ip = IPv6(src=src, dst=dst) if is_v6(dst) else IP(src=src, dst=dst)
    syn = ip / TCP(sport=int(sport), dport=int(dport), flags="S", seq=2000) / (b"s" * 16)
    tcp = raw(syn)[40 if is_v6(dst) else 20:]
    pkts = fragments(src, dst, 6, 4242, [(0, True, tcp[:n]), (n, False, tcp[n:])])
    sniffer = AsyncSniffer(
        lfilter=lambda p: p.haslayer(TCP) and p[TCP].sport == int(dport) and p[TCP].dport == int(sport),
    )
    sniffer.start()
    time.sleep(0.3)
    send(pkts, verbose=False)
    time.sleep(2)
    results = sniffer.stop() or []
    got = [p for p in results if (int(p[TCP].flags) & 0x12) == 0x12]
    print("synack" if got else "none", flush=True)


def overlap_udp(src, dst, good, bad, marker):
    from scapy.all import UDP, raw, send

    body = (marker.encode() * 40)[:256]
    good_dgram = raw(UDP(sport=40001, dport=int(good)) / body)
    bad_dgram = raw(UDP(sport=40001, dport=int(bad)) / body)
    send(fragments(src, dst, 17, 4343, [
        (0, True, good_dgram[:128]),
        (0, True, bad_dgram[:128]),
        (128, False, good_dgram[128:]),
    ]), verbose=False)
    print("sent", flush=True)


def orphan_frag(src, dst, marker):
    from scapy.all import send

    body = (marker.encode() * 64)[:512]
    send(fragments(src, dst, 17, 4545, [(512, False, body)]) * 3, verbose=False)
    print("sent 3", flush=True)


def sniff(seconds, marker):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.settimeout(0.2)
    end = time.monotonic() + float(seconds)
    seen = 0
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        # Frames arriving on an interface (not the ones this host sends).
        if addr[2] != socket.PACKET_OUTGOING and marker.encode() in data:
            seen += 1
    print(f"received {seen}", flush=True)


def udp_recv(addr, port, seconds):
    fam = socket.AF_INET6 if is_v6(addr) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    s.settimeout(0.2)
    end = time.monotonic() + float(seconds)
    sizes = []
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        sizes.append(len(data))
    print("sizes " + ",".join(str(n) for n in sizes), flush=True)


def udp_big(dst, port, size):
    fam = socket.AF_INET6 if is_v6(dst) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"x" * int(size), (dst, int(port)))
    print("sent", flush=True)


def connect_mark(dst, port, mark):
    fam = socket.AF_INET6 if is_v6(dst) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, int(mark, 0))
    s.settimeout(2)
    try:
        s.connect((dst, int(port)))
        s.recv(3)
        print("connected", flush=True)
    except OSError:
        print("failed", flush=True)


def flood(dst, port, seconds):
    fam = socket.AF_INET6 if is_v6(dst) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setblocking(False)
    end = time.monotonic() + float(seconds)
    sent = 0
    while time.monotonic() < end:
        for _ in range(256):
            # A fresh source port each time: every packet is a new flow.
            try:
                s.sendto(b"flood", (dst, int(port)))
                sent += 1
            except (BlockingIOError, OSError):
                pass
        s.close()
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setblocking(False)
    print(f"sent {sent}", flush=True)


COMMANDS = {
    "flood": flood,
    "listen": listen,
    "icmp-error": icmp_error,
    "udp-send": udp_send,
    "syn": syn,
    "frag-syn": frag_syn,
    "orphan-frag": orphan_frag,
    "sniff": sniff,
    "overlap-udp": overlap_udp,
    "udp-recv": udp_recv,
    "udp-big": udp_big,
    "connect-mark": connect_mark,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
