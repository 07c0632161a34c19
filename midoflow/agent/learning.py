"""Learned entries: the MAC and ARP entries the simulation reports, written
to the replicated tables in the store, each write claimed so the packets of
a flow (which all miss until the entry comes back through the watch) do not
each start one; and the per-port MAC limit."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from midoflow.agent.cache import TopologyCache
from midoflow.agent.clock import Clock
from midoflow.errors import MidoflowError
from midoflow.store import paths
from midoflow.store.base import Store

LOG = logging.getLogger(__name__)

# A learned ARP entry is re-written to the store at most this often.
ARP_REWRITE_SECONDS = 60.0
# A MAC or ARP entry being written is not written again before this (also the
# back-off after a failed write).
LEARN_RETRY_SECONDS = 1.0
_MAX_CLAIMS = 65536

MacEntry = tuple[str, str, str]  # (bridge, mac, port)
ArpEntry = tuple[str, str, str]  # (router, ip, mac)


class Learning:
    def __init__(self, store: Store, cache: TopologyCache, max_macs: int,
                 clock: Clock, stats: dict) -> None:
        self.store, self.cache, self.max_macs = store, cache, max_macs
        self.clock, self.stats = clock, stats
        self.writing: dict[tuple, float] = {}  # entry -> claimed until
        # Entries this process wrote: others (a previous run's, about to vanish
        # with its session) are written again when seen.
        self.mine: set = set()
        # The MACs each local port has been allowed to have learned (the limit).
        self.port_macs: dict[str, set[tuple[str, str]]] = {}

    # ---- the MAC limit ------------------------------------------------------
    def _new_macs(self, learned: Iterable[MacEntry], in_port: str) -> set[tuple[str, str]]:
        mine = self.port_macs.get(in_port, set())
        return {(b, m) for b, m, pid in learned if pid == in_port and (b, m) not in mine}

    def _over(self, mine: set[tuple[str, str]], new: set, in_port: str) -> tuple[bool, set]:
        if len(mine) + len(new) <= self.max_macs:
            return False, mine
        # MACs since learned on another port (a VM that moved) no longer count
        kept = {bm for bm in mine if self.cache.macs.get(bm) in (None, in_port)}
        return len(kept) + len(new) > self.max_macs, kept

    def mac_limit_hit(self, learned: Iterable[MacEntry], in_port: str) -> bool:
        """Whether ``learned`` holds a MAC new on ``in_port`` while the port
        already has its limit of MACs; else the new ones are counted. A known
        MAC costs one set lookup (this runs for every bridged packet-in)."""
        new = self._new_macs(learned, in_port)
        if not new:
            return False
        mine = self.port_macs.setdefault(in_port, set())
        hit, kept = self._over(mine, new, in_port)
        if kept is not mine:
            mine &= kept
        if hit:
            return True
        mine |= new
        return False

    def would_hit(self, learned: Iterable[MacEntry], in_port: str) -> bool:
        """:meth:`mac_limit_hit` without counting anything."""
        new = self._new_macs(learned, in_port)
        return bool(new) and self._over(self.port_macs.get(in_port, set()), new, in_port)[0]

    def forget_port(self, port_id: str) -> None:
        self.port_macs.pop(port_id, None)

    # ---- writes ---------------------------------------------------------------
    def claim(self, entries: Iterable[tuple]) -> tuple:
        """The entries no write is in flight (or just failed) for: every packet
        of a flow misses until the learned entry comes back through the watch,
        and each must not start a store write of its own."""
        now = self.clock.mono()  # a local deadline
        out = []
        for e in entries:
            until = self.writing.get(e)
            if until is None or until < now:
                self.writing[e] = now + LEARN_RETRY_SECONDS
                out.append(e)
        if len(self.writing) > _MAX_CLAIMS:  # forget stale claims
            self.writing = {k: t for k, t in self.writing.items() if t >= now}
        return tuple(out)

    def learn_macs(self, learned: Iterable[MacEntry]) -> None:
        for entry in learned:
            bridge_id, mac, port_id = entry
            if self.cache.macs.get((bridge_id, mac)) == port_id and entry in self.mine:
                self.writing.pop(entry, None)
                continue
            table = paths.mac_table(bridge_id)
            try:
                # Drop older entries for this MAC (a VM that moved), then record ours.
                for name in self.store.list_state(table):
                    if name.startswith(mac + ",") and name != f"{mac},{port_id}":
                        self.store.delete_state(f"{table}/{name}")
                self.store.put_state(paths.mac_entry(bridge_id, mac, port_id), {},
                                     ephemeral=True)
                self.stats["learned"] += 1
                self.writing.pop(entry, None)
                self.mine.add(entry)
            except MidoflowError as e:  # the claim stays: no retry for a while
                LOG.warning("cannot record %s on bridge %s (retry in %.0f s): %s", mac,
                            bridge_id, LEARN_RETRY_SECONDS, e)

    def learn_arps(self, entries: Iterable[ArpEntry]) -> None:
        self.record_arps(self.note_arps(entries))

    def note_arps(self, entries: Iterable[ArpEntry]) -> list[tuple[str, str, str, str]]:
        """ARP answers this agent simulated, into its own table at once: the
        packets waiting for them go now, not after the store's copy comes
        back through the watch (several ZooKeeper round trips). Returns the
        entries to record, (router, ip, mac, entry name)."""
        out = []
        for router_id, ip, mac in entries:
            cur = self.cache.arps.get((router_id, ip))
            now = self.clock.wall()  # the learned time, compared with stored ones
            if cur and cur[0] == mac and now - cur[1] < ARP_REWRITE_SECONDS \
                    and cur[2] in self.mine:
                continue
            name = paths.arp_entry(router_id, ip, mac, now).rsplit("/", 1)[1]
            parsed = paths.parse_arp_entry(name)
            if parsed is not None:  # the time as the name holds it, as the watch will
                self.cache.arp_learned_here(router_id, ip, mac, parsed[2], name)
            out.append((router_id, ip, mac, name))
        return out

    def record_arps(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Write noted ARP entries to the store (ZooKeeper): the new entry
        first, then the old ones for the address go: never a moment without."""
        for router_id, ip, mac, name in entries:
            try:
                table = paths.arp_table(router_id)
                self.store.put_state(f"{table}/{name}", {}, ephemeral=True)
                for old in self.store.list_state(table):
                    e = paths.parse_arp_entry(old)
                    if e and e[0] == ip and old != name:
                        self.store.delete_state(f"{table}/{old}")
                self.mine = {n for n in self.mine
                             if not (isinstance(n, str) and n.startswith(ip + ","))}
                self.mine.add(name)
                self.writing.pop((router_id, ip, mac), None)
            except MidoflowError as e:  # the claim stays: no retry for a while
                LOG.warning("cannot record ARP %s -> %s on router %s: %s", ip, mac,
                            router_id, e)
