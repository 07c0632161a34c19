"""Send many distinct Ethernet frames from inside a VM namespace (raw socket).

Run as ``python -m benchmarks.blaster IFACE SRC_MAC COUNT SECONDS [RATE]`` in
the VM's namespace: frames from SRC_MAC to COUNT distinct unknown unicast
destination MACs (one new flow each), repeated until SECONDS pass, so a frame
whose packet-in was dropped is sent again. RATE (frames/s, default 0:
unlimited) paces the sending: an unpaced sender makes OVS spend both cores on
upcalls of frames whose packet-ins it then drops, starving the controller it
is meant to measure. Prints how many frames it sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from os_ken.lib.packet import ether_types, ethernet, in_proto, ipv4, packet, udp

BURST = 50  # frames sent back to back between two pacing checks


def ipv4_udp(src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    """A well-formed IPv4/UDP packet (port 9 to 9, DF set), checksums filled
    in by os-ken."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(ethertype=ether_types.ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=in_proto.IPPROTO_UDP,
                               flags=0x2, ttl=64))
    pkt.add_protocol(udp.udp(src_port=9, dst_port=9))
    pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data[ethernet.ethernet._MIN_LEN:])


def _ipv4_udp_body() -> bytes:
    """The IPv4/UDP part of every frame (192.0.2.1 -> 192.0.2.2, 18 bytes of
    payload: 60-byte frames)."""
    return ipv4_udp("192.0.2.1", "192.0.2.2", bytes(18))


def frames(src: str, count: int) -> list[bytes]:
    """Minimum-size frames (60 bytes) carrying valid IPv4/UDP: a controller
    that parses the IP header must not take them for garbage. Destinations
    06:aa:<32-bit counter>."""
    s = bytes.fromhex(src.replace(":", ""))
    head = s + struct.pack("!H", ether_types.ETH_TYPE_IP)
    body = _ipv4_udp_body()
    return [bytes([0x06, 0xAA]) + struct.pack("!I", i) + head + body for i in range(count)]


def main() -> int:
    iface, src, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    fs = frames(src, count)
    sent = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        for i, f in enumerate(fs):
            try:
                sock.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
            if rate and i % BURST == BURST - 1:
                now = time.monotonic()
                if now >= deadline:
                    break
                ahead = start + sent / rate - now
                if ahead > 0:
                    time.sleep(ahead)
        if not rate:
            time.sleep(0.05)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
