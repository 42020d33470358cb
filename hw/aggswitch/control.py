"""Control plane: the AXI4-Lite slave, configuration registers, counters (SPEC §8).

Every register comes from `regmap.register_map`, so the RTL, the driver, the testbenches
and docs/registers.md cannot disagree. Counters count the one-cycle event pulses the
pipeline stages emit: one per cycle for the per-port counters, one per result emitter for
the global ones.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import Params, DROP_REASONS
from .regmap import register_map, PORT_COUNTERS, GLOBAL_COUNTERS
from .frame import slot_bits

RESP_OKAY = 0
RESP_SLVERR = 2


class ControlPlane(wiring.Component):
    def __init__(self, p: Params, addr_width=16):
        self.p = p
        self.addr_width = addr_width
        sb = slot_bits(p) + 1
        super().__init__({
            # AXI4-Lite slave
            "awaddr": In(addr_width), "awvalid": In(1), "awready": Out(1),
            "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
            "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
            "araddr": In(addr_width), "arvalid": In(1), "arready": Out(1),
            "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
            # configuration
            "cycles": Out(32),
            "switch_mac": Out(48), "switch_ip": Out(32), "agg_port": Out(16),
            "egress_watchdog": Out(32),
            "job_enable": Out(p.jobs), "job_mask": Out(p.ports * p.jobs),
            "job_base": Out(sb * p.jobs), "job_count": Out(sb * p.jobs),
            # events
            "ev_rx": In(p.ports), "ev_tx": In(p.ports),
            "ev_accept": In(p.ports), "ev_resend": In(p.ports),
            "ev_drop_ingress": In(p.ports), "ev_drop_ingress_reason": In(3 * p.ports),
            "ev_drop_engine": In(p.ports), "ev_drop_engine_reason": In(3),
            "ev_drop_egress": In(p.ports),
            # one bit per result emitter: rounds may complete on several ports at once
            "ev_result": In(p.ports), "ev_overflow": In(p.ports), "ev_nan": In(p.ports),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        sb = slot_bits(p) + 1
        regs = register_map(p)

        cycles = Signal(32)
        m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += self.cycles.eq(cycles)

        # --- storage: one Signal per writable register and per counter ---------------
        store = {}
        for r in regs:
            if r.access == "rw":
                store[r.name] = Signal(r.bits, init=r.reset, name=r.name.lower())
            elif r.access == "counter" and r.name != "CYCLES":
                store[r.name] = Signal(32, name=r.name.lower())
        store["CYCLES"] = cycles

        m.d.comb += [
            self.switch_mac.eq(Cat(store["SWITCH_MAC_LO"], store["SWITCH_MAC_HI"])),
            self.switch_ip.eq(store["SWITCH_IP"]),
            self.agg_port.eq(store["AGG_PORT"]),
            self.egress_watchdog.eq(store["EGRESS_WATCHDOG"]),
        ]
        for j in range(p.jobs):
            m.d.comb += [
                self.job_enable[j].eq(store[f"JOB{j}_CTRL"][0]),
                self.job_mask.word_select(j, P).eq(store[f"JOB{j}_PORT_MASK"]),
                self.job_base.word_select(j, sb).eq(store[f"JOB{j}_SLOT_BASE"]),
                self.job_count.word_select(j, sb).eq(store[f"JOB{j}_SLOT_COUNT"]),
            ]

        # --- counters ------------------------------------------------------------------
        def count(name, event):
            with m.If(event):
                m.d.sync += store[name].eq(store[name] + 1)

        for n in range(P):
            pre = f"P{n}_"
            count(pre + "RX", self.ev_rx[n])
            count(pre + "ACCEPTED", self.ev_accept[n])
            count(pre + "TX", self.ev_tx[n])
            count(pre + "RESENT", self.ev_resend[n])
            ing_reason = self.ev_drop_ingress_reason.word_select(n, 3)
            for code, reason in enumerate(DROP_REASONS):
                event = ((self.ev_drop_ingress[n] & (ing_reason == code))
                         | (self.ev_drop_engine[n] & (self.ev_drop_engine_reason == code)))
                count(pre + f"DROP_{reason.upper()}", event)
            count(pre + "DROP_EGRESS_STALL", self.ev_drop_egress[n])
        def count_all(name, events):
            with m.If(events.any()):
                m.d.sync += store[name].eq(store[name] + sum(events[i] for i in range(len(events))))

        count_all("RESULTS", self.ev_result)
        count_all("OVERFLOWS", self.ev_overflow)
        count_all("NANS", self.ev_nan)

        # --- AXI4-Lite write channel -----------------------------------------------------
        # Address and data are taken together; one response outstanding at a time.
        bvalid = Signal()
        bresp = Signal(2)
        take_w = self.awvalid & self.wvalid & ~bvalid
        m.d.comb += [self.awready.eq(take_w), self.wready.eq(take_w),
                     self.bvalid.eq(bvalid), self.bresp.eq(bresp)]
        strobe_mask = Cat(*[self.wstrb[i].replicate(8) for i in range(4)])
        with m.If(take_w):
            m.d.sync += [bvalid.eq(1), bresp.eq(RESP_SLVERR)]
            with m.Switch(self.awaddr[2:]):
                for r in regs:
                    if r.access != "rw":
                        continue
                    with m.Case(r.offset >> 2):
                        reg = store[r.name]
                        merged = (reg & ~strobe_mask[:r.bits]) | (self.wdata[:r.bits] & strobe_mask[:r.bits])
                        m.d.sync += [reg.eq(merged), bresp.eq(RESP_OKAY)]
        with m.Elif(self.bready):
            m.d.sync += bvalid.eq(0)

        # --- AXI4-Lite read channel ------------------------------------------------------
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [self.arready.eq(~rvalid), self.rvalid.eq(rvalid),
                     self.rdata.eq(rdata), self.rresp.eq(rresp)]
        with m.If(self.arvalid & ~rvalid):
            m.d.sync += [rvalid.eq(1), rresp.eq(RESP_OKAY)]
            with m.Switch(self.araddr[2:]):
                for r in regs:
                    with m.Case(r.offset >> 2):
                        m.d.sync += rdata.eq(store[r.name] if r.name in store else r.reset)
                with m.Default():
                    m.d.sync += [rdata.eq(0), rresp.eq(RESP_SLVERR)]
        with m.Elif(rvalid & self.rready):
            m.d.sync += rvalid.eq(0)
        return m
