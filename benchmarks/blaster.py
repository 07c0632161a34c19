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

BURST = 50  # frames sent back to back between two pacing checks


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_udp(src_ip: bytes, dst_ip: bytes, payload: bytes) -> bytes:
    """A well-formed IPv4/UDP packet (UDP checksum 0: none, as IPv4 allows)."""
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      src_ip, dst_ip)
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + udp


def frames(src: str, count: int) -> list[bytes]:
    """Minimum-size frames (60 bytes) carrying valid IPv4/UDP (192.0.2.1 -> 192.0.2.2,
    port 9): a controller that parses the IP header must not take them for garbage."""
    s = bytes.fromhex(src.replace(":", ""))
    body = _ipv4_udp(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), bytes(18))
    out = []
    for i in range(count):
        dst = bytes([0x06, 0xAA]) + struct.pack("!I", i)
        out.append(dst + s + b"\x08\x00" + body)
    return out


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
