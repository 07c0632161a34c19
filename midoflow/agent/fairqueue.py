"""The agent's packet-in queue: per-port fair, bounded, with priority classes.

os-ken hands every packet-in to the app through one FIFO (the app's event
queue, 128 deep, whose full semaphore blocks the switch connection's reader).
Simulating in that handler puts a blasting VM's backlog, up to its meter's
1,000/s, in front of a quiet VM's first packet and of the agent's own work
(flow-removed events, ARP replies that release held packets, flow state
pushed by other hosts). So the handler only files each packet-in here, in
O(1), and one worker drains this queue:

* **classes**, served in priority order: ``CONTROL`` (flow state pushed by
  other hosts' agents), ``ARP`` (ARP replies, held packets released by one),
  ``VM`` (everything else: first packets). A lower class that waits is
  still served once every ``escape`` packets of the higher ones, so a VM
  that sends only ARP replies cannot starve its neighbours' first packets.
* inside a class, **deficit round robin** over ingress ports: a port gets
  ``weight`` packets per turn (every packet costs one simulation, so the
  cost is counted in packets, not bytes); FIFO within a port.
* **bounds**: a port's queue holds at most ``bound`` packets of a class;
  the oldest is dropped (and counted by port) to make room, so a VM's backlog
  never grows without limit and what it sends now is what gets served.

Hand-written: it is a few dozen lines on :class:`collections.deque`; the
libraries for fair queueing schedule sockets or asyncio tasks, not items.
Pure: no os-ken, no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

CONTROL, ARP, VM = 0, 1, 2
CLASSES = (CONTROL, ARP, VM)
CLASS_NAMES = {CONTROL: "control", ARP: "arp", VM: "vm"}

DEFAULT_BOUND = 256  # packets per port and class
DEFAULT_ESCAPE = 8   # higher-class packets served before a waiting lower class gets one


class _Class:
    """One priority class: a FIFO per port, the ports with packets in turn."""

    __slots__ = ("active", "bound", "deficit", "queues", "weight")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.queues: dict[Hashable, deque] = {}
        self.active: deque[Hashable] = deque()  # ports with packets, in serving order
        self.deficit: dict[Hashable, int] = {}
        self.weight: dict[Hashable, int] = {}


class FairQueue:
    """Packet-ins by class and ingress port (see the module docstring).

    ``put`` never blocks and is O(1); ``get`` returns ``(port, item)`` or
    None when empty. ``drops`` counts, by port, the packets dropped for room.
    """

    def __init__(self, bound: int = DEFAULT_BOUND, control_bound: int | None = None,
                 escape: int = DEFAULT_ESCAPE) -> None:
        if bound < 1 or escape < 1 or (control_bound is not None and control_bound < 1):
            raise ValueError(f"a fair queue needs bounds >= 1 and escape >= 1 "
                             f"(got bound {bound}, control bound {control_bound}, "
                             f"escape {escape})")
        self.escape = escape
        self._classes = {c: _Class(bound) for c in CLASSES}
        self._classes[CONTROL].bound = control_bound if control_bound is not None \
            else 16 * bound
        self._waited = dict.fromkeys(CLASSES, 0)  # packets served above a waiting class
        self._len = 0
        self.drops: dict[Hashable, int] = {}
        self.dropped = 0  # all ports
        self.served = dict.fromkeys(CLASSES, 0)

    def __len__(self) -> int:
        return self._len

    def depth(self, klass: int | None = None, port: Hashable | None = None) -> int:
        """Packets queued: of a class, of a port, or both."""
        classes = CLASSES if klass is None else (klass,)
        total = 0
        for c in classes:
            queues = self._classes[c].queues
            if port is None:
                total += sum(len(q) for q in queues.values())
            elif port in queues:
                total += len(queues[port])
        return total

    def put(self, port: Hashable, item: Any, klass: int = VM, weight: int = 1) -> Any:
        """File ``item`` at the tail of ``port``'s queue of ``klass``; ``weight``:
        the port's packets per round-robin turn (>= 1). Returns the item
        dropped to make room (the port's oldest), or None."""
        cl = self._classes[klass]
        q = cl.queues.get(port)
        if q is None:
            q = cl.queues[port] = deque()
            cl.active.append(port)
            cl.deficit[port] = 0
        cl.weight[port] = max(1, weight)
        dropped = None
        if len(q) >= cl.bound:
            dropped = q.popleft()
            self.drops[port] = self.drops.get(port, 0) + 1
            self.dropped += 1
        else:
            self._len += 1
        q.append(item)
        return dropped

    def get(self) -> tuple[Hashable, Any] | None:
        """The next ``(port, item)`` to serve, or None when nothing waits."""
        if not self._len:
            return None
        waiting = [c for c in CLASSES if self._classes[c].active]
        chosen = waiting[0]
        for c in waiting[1:]:  # a starved lower class escapes, highest first
            if self._waited[c] >= self.escape:
                chosen = c
                break
        for c in waiting:
            if c > chosen:
                self._waited[c] += 1
        self._waited[chosen] = 0
        self.served[chosen] += 1
        return self._serve(self._classes[chosen])

    def _serve(self, cl: _Class) -> tuple[Hashable, Any]:
        port = cl.active[0]
        if cl.deficit[port] < 1:
            cl.deficit[port] += cl.weight[port]
        q = cl.queues[port]
        item = q.popleft()
        cl.deficit[port] -= 1
        self._len -= 1
        if not q:  # idle ports keep no credit and no state
            cl.active.popleft()
            del cl.queues[port], cl.deficit[port], cl.weight[port]
        elif cl.deficit[port] < 1:  # its turn is over
            cl.active.rotate(-1)
        return port, item

    def clear(self) -> int:
        """Forget everything queued (the switch connection is gone); how many."""
        n = self._len
        for c in CLASSES:
            self._classes[c] = _Class(self._classes[c].bound)
        self._waited = dict.fromkeys(CLASSES, 0)
        self._len = 0
        return n
