"""Traffic capture of a simulation as pcapng (`make sim PCAP=1`), readable by Wireshark.

:class:`PcapNgWriter` is a minimal pcapng writer (Section Header, Interface Description and
Enhanced Packet blocks, little-endian; the format of the IETF pcapng draft).
:class:`AxisCapture` attaches one to a cocotb testbench (tb/cocotb/harness.py): one
interface per switch port and direction, named after the AXI4-Stream bus
(``s{p}_axis``: into the switch, ``m{p}_axis``: out of it), link type Ethernet, and every
frame as it crossed the interface (the bytes of the kept lanes, no FCS). A packet's
timestamp is the cycle of its tlast handshake times the clock period, cycles counted from
the start of the simulation (so they grow across resets); its comment gives the cycles
of the first and last beat in the switch's own counter (the one RESULT timestamps
carry, docs/SPEC.md §10.4), e.g. ``cycles 130..133``.

Every block is written and flushed as the frame completes, so the file is a valid capture
at any moment, also when a test fails half-way.
"""

from __future__ import annotations

import struct
from pathlib import Path

LINKTYPE_ETHERNET = 1
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
# option codes
_OPT_END, _OPT_COMMENT = 0, 1
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_SHB_USERAPPL = 4
_EPB_FLAGS = 2
INBOUND, OUTBOUND = 1, 2  # epb_flags direction bits, as seen from the interface's host


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def _options(opts) -> bytes:
    out = b""
    for code, value in opts:
        out += struct.pack("<HH", code, len(value)) + _pad4(value)
    return out + struct.pack("<HH", _OPT_END, 0) if out else b""


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """Writes a pcapng file: ``add_interface`` for each interface (before its first
    packet), then ``packet``. Timestamps are integers in units of 10**-tsresol seconds
    (nanoseconds by default)."""

    def __init__(self, path: Path, application: str = "aggswitch testbench"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        self._tsresol = []
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)  # version 1.0, length unknown
        self._write(_block(_SHB, body + _options([(_SHB_USERAPPL, application.encode())])))

    def _write(self, b: bytes):
        self._f.write(b)
        self._f.flush()

    def add_interface(self, name: str, description: str = "", linktype: int = LINKTYPE_ETHERNET,
                      tsresol: int = 9, snaplen: int = 0) -> int:
        opts = [(_IF_NAME, name.encode())]
        if description:
            opts.append((_IF_DESCRIPTION, description.encode()))
        opts.append((_IF_TSRESOL, bytes([tsresol])))
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(opts)
        self._write(_block(_IDB, body))
        self._tsresol.append(tsresol)
        return len(self._tsresol) - 1

    def packet(self, interface: int, timestamp: int, data: bytes, comment: str = "",
               direction: int = 0):
        if not 0 <= interface < len(self._tsresol):
            raise ValueError(f"no interface {interface}")
        opts = []
        if comment:
            opts.append((_OPT_COMMENT, comment.encode()))
        if direction:
            opts.append((_EPB_FLAGS, struct.pack("<I", direction)))
        body = struct.pack("<IIIII", interface, timestamp >> 32, timestamp & 0xFFFFFFFF,
                           len(data), len(data)) + _pad4(bytes(data)) + _options(opts)
        self._write(_block(_EPB, body))

    def close(self):
        self._f.close()


class AxisCapture:
    """Captures every frame of a TB's AXI4-Stream ports into `path` (see the module
    docstring). Interfaces: ``s0_axis``, ``m0_axis``, ``s1_axis``, ... (ids 2p and 2p + 1)."""

    def __init__(self, tb, path: Path):
        self.tb = tb
        self.period_ns = tb.clock_period_ns
        self.writer = PcapNgWriter(path)
        self.frames = 0
        for p in range(tb.ports):
            self.writer.add_interface(f"s{p}_axis", f"aggswitch port {p} ingress (worker to switch)")
            self.writer.add_interface(f"m{p}_axis", f"aggswitch port {p} egress (switch to worker)")
        tb.add_ingress_hook(lambda rec: self._frame(2 * rec.port, rec, INBOUND))
        tb.add_egress_hook(lambda rec: self._frame(2 * rec.port + 1, rec, OUTBOUND))

    def _frame(self, interface: int, rec, direction: int):
        cycle = self.tb.sim_cycle()  # the tlast handshake's cycle: the hooks run at its edge
        self.writer.packet(interface, cycle * self.period_ns, rec.data,
                           comment=f"cycles {rec.t_first}..{rec.t_last}", direction=direction)
        self.frames += 1
