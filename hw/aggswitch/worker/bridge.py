"""The network side of a switch port: UDP datagrams on 127.0.0.1 <-> Ethernet frames.

:class:`UdpPorts` binds one UDP socket per switch port on a loopback address. A datagram
arriving on port ``p``'s socket becomes a DATA frame for switch port ``p`` with the
sender's address in the headers (:func:`frame_from_datagram`): source IPv4 address and UDP
port as the datagram came, a locally administered MAC derived from them. A RESULT frame
leaving port ``p`` goes back from that socket to the frame's destination IPv4 address and
UDP port (:func:`datagram_from_frame`): the switch addresses a RESULT to the address it
learned from the job's DATA frames on that port (SPEC §6), so no table is kept here.

Loss injection for recovery tests: with `loss` > 0 each DATA datagram (one whose AGG
header says version 1, op DATA) and each RESULT is dropped with that probability, decided
per port and direction by a `random.Random` seeded from `seed`, in the order they pass.
Other datagrams (malformed ones) are never lost, so the switch's drop counters see them.
`make serve` (sim/serve.py, tb/cocotb/serve.py) puts the RTL behind this; the worker tests
put the golden model behind it.
"""

from __future__ import annotations

import ipaddress
import random
import select
import socket

from . import wire as F

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def loopback_host(host: str) -> str:
    """`host` if it is an IPv4 loopback address, else ValueError: the bridge serves only
    this machine."""
    if ipaddress.IPv4Address(host) not in LOOPBACK:
        raise ValueError(f"{host} is not a loopback address (127.0.0.0/8)")
    return host


def worker_mac(ip: int, udp_port: int) -> int:
    """A locally administered unicast MAC for the worker at (IPv4, UDP port)."""
    return 0x02_00_00_00_00_00 | ((ip & 0xFFFF) << 16) | (udp_port & 0xFFFF)


def frame_from_datagram(data: bytes, src, *, switch_mac: int = F.DEFAULT_MAC,
                        switch_ip: int = F.DEFAULT_IP, agg_port: int = F.DEFAULT_AGG_PORT) -> bytes:
    """The Ethernet/IPv4/UDP frame (no FCS) carrying `data` from `src` = (host, UDP port) to
    the switch's address. Any datagram becomes a frame, malformed or not: admission is the
    switch's job (SPEC §10.2)."""
    ip = int(ipaddress.IPv4Address(src[0]))
    return F.udp_frame(data, src_mac=worker_mac(ip, src[1]), dst_mac=switch_mac, src_ip=ip,
                       dst_ip=switch_ip, src_port=src[1], dst_port=agg_port)


def datagram_from_frame(frame: bytes):
    """((host, UDP port), datagram) of a RESULT frame: its destination and bytes 42.."""
    frame = bytes(frame)
    if len(frame) < F.AGG_OFF:
        raise ValueError(f"frame of {len(frame)} bytes has no UDP payload")
    ip = int.from_bytes(frame[F.IP_OFF + 16:F.IP_OFF + 20], "big")
    port = int.from_bytes(frame[F.UDP_OFF + 2:F.UDP_OFF + 4], "big")
    return (str(ipaddress.IPv4Address(ip)), port), frame[F.AGG_OFF:]


class UdpPorts:
    """One UDP socket per switch port on `host` (a loopback address). `base_port` 0 binds
    ephemeral ports (see :attr:`addresses`), else ``base_port + p`` for port ``p``."""

    def __init__(self, ports: int, *, host: str = "127.0.0.1", base_port: int = 0,
                 loss: float = 0.0, seed: int = 1):
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss {loss} outside [0, 1)")
        self.host = loopback_host(host)
        self.loss = float(loss)
        self.rng_data = [random.Random(f"{seed}/data/{p}") for p in range(ports)]
        self.rng_result = [random.Random(f"{seed}/result/{p}") for p in range(ports)]
        self.socks = []
        self.counts = {"datagrams": 0, "lost_data": 0, "results": 0, "lost_results": 0,
                       "undeliverable": 0, "foreign": 0}
        try:
            for p in range(ports):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.socks.append(s)
                s.bind((host, base_port + p if base_port else 0))
                s.setblocking(False)
        except OSError:
            self.close()
            raise

    @property
    def addresses(self) -> list:
        return [s.getsockname() for s in self.socks]

    def close(self):
        for s in self.socks:
            s.close()

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until a datagram is waiting on some port."""
        ready, _, _ = select.select(self.socks, [], [], max(0.0, timeout))
        return bool(ready)

    def receive(self) -> list:
        """Every datagram waiting now, as (port, DATA frame), in port order, after loss.
        Datagrams from outside the loopback network are ignored."""
        out = []
        for p, s in enumerate(self.socks):
            while True:
                try:
                    data, src = s.recvfrom(65535)
                except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                    break
                if ipaddress.IPv4Address(src[0]) not in LOOPBACK:
                    self.counts["foreign"] += 1
                    continue
                self.counts["datagrams"] += 1
                is_data = len(data) >= F.AGG_HDR_LEN and data[0] == (F.AGG_VER << 4 | F.OP_DATA)
                if is_data and self.loss and self.rng_data[p].random() < self.loss:
                    self.counts["lost_data"] += 1
                    continue
                out.append((p, frame_from_datagram(data, src)))
        return out

    def deliver(self, port: int, frame: bytes) -> bool:
        """Send a RESULT frame leaving switch port `port` to its worker (unless lost).
        Returns whether it was sent."""
        self.counts["results"] += 1
        if self.loss and self.rng_result[port].random() < self.loss:
            self.counts["lost_results"] += 1
            return False
        dst, data = datagram_from_frame(frame)
        if ipaddress.IPv4Address(dst[0]) not in LOOPBACK or dst[1] == 0:
            self.counts["undeliverable"] += 1
            return False
        try:
            self.socks[port].sendto(data, dst)
        except OSError:
            self.counts["undeliverable"] += 1
            return False
        return True
