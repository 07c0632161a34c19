"""Packet-in parse cost (microseconds per frame, lower is better): midoflow's
bounds-checked struct parser against the os-ken packet-library parse it
replaced (the same fields read from ``os_ken.lib.packet.packet.Packet``),
on the same typical frames, same run."""

from __future__ import annotations

import itertools
import time

from os_ken.lib.packet import arp, ethernet, icmp, ipv4, packet, tcp, udp

from benchmarks.common import report
from midoflow.apps import frames

VM1, VM2 = "02:00:00:00:01:01", "02:00:00:00:02:02"


def _frame(*protocols) -> bytes:
    p = packet.Packet()
    for proto in protocols:
        p.add_protocol(proto)
    p.serialize()
    return bytes(p.data)


def typical_frames() -> dict[str, bytes]:
    e = ethernet.ethernet(dst=VM2, src=VM1, ethertype=0x0800)
    ip = {"src": "10.0.0.1", "dst": "10.0.0.2"}
    syn_options = [tcp.TCPOptionMaximumSegmentSize(max_seg_size=1460),
                   tcp.TCPOptionSACKPermitted(), tcp.TCPOptionTimestamps(ts_val=1, ts_ecr=0),
                   tcp.TCPOptionNoOperation(), tcp.TCPOptionWindowScale(shift_cnt=7)]
    return {
        "tcp_syn": _frame(e, ipv4.ipv4(proto=6, **ip), tcp.tcp(
            src_port=40000, dst_port=80, bits=0x02, option=syn_options)),
        "tcp_data": _frame(e, ipv4.ipv4(proto=6, **ip), tcp.tcp(
            src_port=40000, dst_port=80, bits=0x18, option=[
                tcp.TCPOptionNoOperation(), tcp.TCPOptionNoOperation(),
                tcp.TCPOptionTimestamps(ts_val=5, ts_ecr=6)]), b"x" * 1200),
        "udp": _frame(e, ipv4.ipv4(proto=17, **ip), udp.udp(src_port=5000, dst_port=53),
                      b"q" * 40),
        "icmp_echo": _frame(e, ipv4.ipv4(proto=1, **ip), icmp.icmp(
            type_=8, code=0, data=icmp.echo(id_=7, seq=1, data=b"p" * 56))),
        "arp": _frame(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=VM1, ethertype=0x0806),
                      arp.arp(opcode=1, src_mac=VM1, src_ip="10.0.0.1",
                              dst_mac="00:00:00:00:00:00", dst_ip="10.0.0.2")),
    }


def osken_parse(frame: bytes) -> dict:
    """The fields the agent read with os-ken's packet library before issue 9."""
    pkt = packet.Packet(frame)
    eth = pkt.get_protocol(ethernet.ethernet)
    f = {"eth_src": eth.src.lower(), "eth_dst": eth.dst.lower(), "eth_type": eth.ethertype}
    ip = pkt.get_protocol(ipv4.ipv4)
    if ip is not None:
        f.update(ip_src=ip.src, ip_dst=ip.dst, ip_proto=ip.proto, ip_ttl=ip.ttl, ip_tos=ip.tos)
        t = pkt.get_protocol(tcp.tcp)
        l4 = t or pkt.get_protocol(udp.udp)
        if l4 is not None:
            f.update(tp_src=l4.src_port, tp_dst=l4.dst_port)
            if t is not None:
                f["tcp_flags"] = t.bits
        else:
            ic = pkt.get_protocol(icmp.icmp)
            if ic is not None:
                f.update(tp_src=ic.type, tp_dst=ic.code)
                if isinstance(ic.data, icmp.echo):
                    f["icmp_id"] = ic.data.id
    a = pkt.get_protocol(arp.arp)
    if a is not None:
        f.update(arp_op=a.opcode, arp_sha=a.src_mac.lower(), arp_spa=a.src_ip,
                 arp_tha=a.dst_mac.lower(), arp_tpa=a.dst_ip)
    return f


def micros_per_call(fn, items: list[bytes], seconds: float = 1.5) -> float:
    it = itertools.cycle(items)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            fn(next(it))
        n += 1000
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    samples = typical_frames()
    for name, frame in samples.items():  # same fields, or the comparison is moot
        assert frames.parse(frame) == osken_parse(frame), name
    per_kind = {name: {"midoflow_us": round(micros_per_call(frames.parse, [f], 0.3), 2),
                       "osken_us": round(micros_per_call(osken_parse, [f], 0.3), 2)}
                for name, f in samples.items()}
    frames_list = list(samples.values())
    base = micros_per_call(osken_parse, frames_list)
    value = micros_per_call(frames.parse, frames_list)
    report("parse", value, "us/frame", "osken_packet", base, higher_is_better=False,
           extra={"frames": list(samples), "per_kind": per_kind})


if __name__ == "__main__":
    main()
