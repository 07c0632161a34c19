"""Send many distinct Ethernet frames from inside a VM namespace (raw socket).

Run as ``python -m benchmarks.blaster IFACE SRC_MAC COUNT SECONDS`` in the VM's
namespace: frames from SRC_MAC to COUNT distinct unknown unicast destination
MACs (one new flow each), repeated until SECONDS pass, so a frame whose
packet-in was dropped is sent again. Prints how many frames it sent.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def frames(src: str, count: int) -> list[bytes]:
    s = bytes.fromhex(src.replace(":", ""))
    out = []
    for i in range(count):
        dst = bytes([0x06, 0xAA]) + struct.pack("!I", i)
        # IPv4/UDP-ish payload; only the Ethernet header matters to the flows.
        out.append(dst + s + b"\x08\x00" + bytes(46))
    return out


def main() -> int:
    iface, src, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    fs = frames(src, count)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for f in fs:
            try:
                sock.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
        time.sleep(0.05)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
