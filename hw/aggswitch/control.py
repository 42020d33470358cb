"""Configuration state, the cycle counter and the AXI4-Lite slave (SPEC §8).

This first version holds the reset defaults of docs/SPEC.md §10.1 and answers reads of
the identification and parameter registers; the writable job table and the counters
come with the control plane.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import Params, DEFAULT_MAC, DEFAULT_IP, DEFAULT_AGG_PORT, latency
from .frame import slot_bits

ID_MAGIC = 0x41474753  # "AGGS"
VERSION = 0x00010000   # 1.0.0

# Read-only registers of this version (byte addresses).
REG_ID = 0x000
REG_VERSION = 0x004
REG_PORTS = 0x008
REG_DATA_WIDTH = 0x00C
REG_SLOTS = 0x010
REG_SLOT_ELEMS = 0x014
REG_JOBS = 0x018
REG_LATENCY = 0x01C
REG_CYCLES = 0x020

RESP_OKAY = 0
RESP_SLVERR = 2


class JobTable(wiring.Component):
    """The job table as flat signals (one entry per job), reset to §10.1."""

    def __init__(self, p: Params):
        self.p = p
        sb = slot_bits(p) + 1
        members = {}
        for j in range(p.jobs):
            members[f"enable{j}"] = Out(1, init=1 if j == 0 else 0)
            members[f"mask{j}"] = Out(p.ports, init=(1 << p.ports) - 1 if j == 0 else 0)
            members[f"base{j}"] = Out(sb, init=0)
            members[f"count{j}"] = Out(sb, init=p.slots if j == 0 else 0)
        super().__init__(members)

    def lookup(self, m, job):
        """Combinational lookup: (enable, mask, base, count) of `job` (0 for job >= jobs)."""
        p = self.p
        enable = Signal(1)
        mask = Signal(p.ports)
        base = Signal(slot_bits(p) + 1)
        count = Signal(slot_bits(p) + 1)
        with m.Switch(job):
            for j in range(p.jobs):
                with m.Case(j):
                    m.d.comb += [enable.eq(getattr(self, f"enable{j}")),
                                 mask.eq(getattr(self, f"mask{j}")),
                                 base.eq(getattr(self, f"base{j}")),
                                 count.eq(getattr(self, f"count{j}"))]
        return enable, mask, base, count

    def elaborate(self, platform):
        m = Module()
        # Held at the reset defaults until the AXI4-Lite job-table registers exist.
        for j in range(self.p.jobs):
            for f in ("enable", "mask", "base", "count"):
                sig = getattr(self, f"{f}{j}")
                reg = Signal.like(sig, name=f"{f}{j}_reg", init=sig.init)
                m.d.comb += sig.eq(reg)
        return m


class ControlPlane(wiring.Component):
    """Switch addresses, the free-running cycle counter and a minimal AXI4-Lite slave."""

    def __init__(self, p: Params, addr_width=16):
        self.p = p
        self.addr_width = addr_width
        super().__init__({
            "cycles": Out(32),
            "switch_mac": Out(48),
            "switch_ip": Out(32),
            "agg_port": Out(16),
            "awaddr": In(addr_width), "awvalid": In(1), "awready": Out(1),
            "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
            "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
            "araddr": In(addr_width), "arvalid": In(1), "arready": Out(1),
            "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p

        cycles = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += self.cycles.eq(cycles)

        mac = Signal(48, init=DEFAULT_MAC)
        ip = Signal(32, init=DEFAULT_IP)
        port = Signal(16, init=DEFAULT_AGG_PORT)
        m.d.comb += [self.switch_mac.eq(mac), self.switch_ip.eq(ip), self.agg_port.eq(port)]

        # Write channel: accept address and data together, answer SLVERR (nothing is
        # writable yet). One outstanding response at a time.
        bvalid = Signal()
        take_w = self.awvalid & self.wvalid & ~bvalid
        m.d.comb += [self.awready.eq(take_w), self.wready.eq(take_w),
                     self.bvalid.eq(bvalid), self.bresp.eq(RESP_SLVERR)]
        with m.If(take_w):
            m.d.sync += bvalid.eq(1)
        with m.Elif(self.bready):
            m.d.sync += bvalid.eq(0)

        # Read channel.
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [self.arready.eq(~rvalid), self.rvalid.eq(rvalid),
                     self.rdata.eq(rdata), self.rresp.eq(rresp)]
        with m.If(self.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rresp.eq(RESP_OKAY)]
            regs = {REG_ID: ID_MAGIC, REG_VERSION: VERSION, REG_PORTS: p.ports,
                    REG_DATA_WIDTH: p.data_width, REG_SLOTS: p.slots,
                    REG_SLOT_ELEMS: p.slot_elems, REG_JOBS: p.jobs,
                    REG_LATENCY: latency(p), REG_CYCLES: cycles}
            with m.Switch(self.araddr[2:]):
                for addr, value in regs.items():
                    with m.Case(addr >> 2):
                        m.d.sync += rdata.eq(value)
                with m.Default():
                    m.d.sync += [rdata.eq(0), rresp.eq(RESP_SLVERR)]
        with m.Elif(rvalid & self.rready):
            m.d.sync += rvalid.eq(0)
        return m
