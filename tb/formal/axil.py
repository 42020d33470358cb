"""AXI4-Lite slave of the control plane (hw/aggswitch/control.py), proven by k-induction.

The master (Assume on the inputs) follows the AXI rules: a VALID stays high, with its
address or data stable, until its READY; the bus is idle in the reset cycle. The event
inputs (counter pulses) are free. The slave (Assert):

- holds BVALID with BRESP, and RVALID with RDATA and RRESP, stable until BREADY / RREADY;
- answers every request exactly once and in order: it takes a write's address and data in
  the same cycle, never has more than one write and one read outstanding, raises BVALID
  (RVALID) exactly while one is outstanding, and so never answers a request it did not
  take, nor twice;
- answers SLVERR exactly where docs/registers.md says: a write to an address that is not
  a read-write register, a read of an unmapped address; OKAY otherwise (addresses are
  decoded by word, `addr[15:2]`);
- a read returns the register: its reset value for a read-only one, the value it holds for
  a read-write one;
- a write changes exactly the register it addresses, in the bytes `wstrb` selects, and a
  SLVERR write changes nothing; every read-write register starts at its reset value.
"""

from amaranth import *
from amaranth.hdl import Assert, Assume, Cover
from amaranth.hdl._ast import AnySeq

from aggswitch.params import Params
from aggswitch.control import ControlPlane, RESP_OKAY, RESP_SLVERR
from aggswitch.regmap import register_map
from aggswitch.frame import slot_bits

from .common import ProofSet, reset_in_first_cycle, past_valid, past

PARAMS = Params(ports=2, data_width=128, slots=4, slot_elems=32, jobs=2)
ADDR_WIDTH = 16


def config_views(ctl, p):
    """Each read-write register of the map as the ControlPlane output that carries it."""
    P, sb = p.ports, slot_bits(p) + 1
    views = {
        "SWITCH_MAC_HI": ctl.switch_mac[32:48], "SWITCH_MAC_LO": ctl.switch_mac[0:32],
        "SWITCH_IP": ctl.switch_ip, "AGG_PORT": ctl.agg_port,
        "EGRESS_WATCHDOG": ctl.egress_watchdog,
    }
    for j in range(p.jobs):
        views.update({
            f"JOB{j}_CTRL": ctl.job_enable[j], f"JOB{j}_PORT_MASK": ctl.job_mask.word_select(j, P),
            f"JOB{j}_SLOT_BASE": ctl.job_base.word_select(j, sb),
            f"JOB{j}_SLOT_COUNT": ctl.job_count.word_select(j, sb),
        })
    return views


class AxiLiteHarness(Elaboratable):
    def __init__(self, p: Params = PARAMS, control_cls=ControlPlane):
        self.p = p
        self.control_cls = control_cls

    def elaborate(self, platform):
        m = Module()
        p = self.p
        reset_in_first_cycle(m)
        pv = past_valid(m)
        m.submodules.dut = ctl = self.control_cls(p, ADDR_WIDTH)
        regs = register_map(p)
        views = config_views(ctl, p)
        assert {r.name for r in regs if r.access == "rw"} == set(views), "a rw register without its view"

        # --- free inputs ------------------------------------------------------------------
        for name in ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bready",
                     "araddr", "arvalid", "rready", "ev_rx", "ev_tx", "ev_accept", "ev_resend",
                     "ev_drop_ingress", "ev_drop_ingress_reason", "ev_drop_engine",
                     "ev_drop_engine_reason", "ev_drop_egress", "ev_result", "ev_overflow", "ev_nan"):
            port = getattr(ctl, name)
            m.d.comb += port.eq(AnySeq(len(port)))

        # --- the master follows AXI (Assume) ----------------------------------------------
        aw_hs = ctl.awvalid & ctl.awready
        w_hs = ctl.wvalid & ctl.wready
        ar_hs = ctl.arvalid & ctl.arready
        b_hs = ctl.bvalid & ctl.bready
        r_hs = ctl.rvalid & ctl.rready
        with m.If(ResetSignal()):
            m.d.comb += Assume(~ctl.awvalid & ~ctl.wvalid & ~ctl.arvalid)
        # (`past` registers are made outside any `If`: they must sample every cycle.)
        aw_wait, w_wait, ar_wait = (past(m, ctl.awvalid & ~ctl.awready, "aw_wait"),
                                    past(m, ctl.wvalid & ~ctl.wready, "w_wait"),
                                    past(m, ctl.arvalid & ~ctl.arready, "ar_wait"))
        awaddr_q, wdata_q, wstrb_q, araddr_q = (past(m, ctl.awaddr, "awaddr_q"), past(m, ctl.wdata, "wdata_q"),
                                                past(m, ctl.wstrb, "wstrb_q"), past(m, ctl.araddr, "araddr_q"))
        b_wait, r_wait = past(m, ctl.bvalid & ~ctl.bready, "b_wait"), past(m, ctl.rvalid & ~ctl.rready, "r_wait")
        bresp_q, rresp_q, rdata_q = (past(m, ctl.bresp, "bresp_q"), past(m, ctl.rresp, "rresp_q"),
                                     past(m, ctl.rdata, "rdata_q"))
        with m.If(pv & ~ResetSignal()):
            with m.If(aw_wait):
                m.d.comb += Assume(ctl.awvalid & (ctl.awaddr == awaddr_q))
            with m.If(w_wait):
                m.d.comb += Assume(ctl.wvalid & (ctl.wdata == wdata_q) & (ctl.wstrb == wstrb_q))
            with m.If(ar_wait):
                m.d.comb += Assume(ctl.arvalid & (ctl.araddr == araddr_q))

        # --- channel stability (Assert) ---------------------------------------------------
        with m.If(pv & ~ResetSignal()):
            with m.If(b_wait):
                m.d.comb += Assert(ctl.bvalid & (ctl.bresp == bresp_q))
            with m.If(r_wait):
                m.d.comb += Assert(ctl.rvalid & (ctl.rresp == rresp_q) & (ctl.rdata == rdata_q))

        # --- one response per request, in order -------------------------------------------
        # Handshake counts modulo 4: a response is due exactly while its request is
        # outstanding; at most one of each kind is.
        aw_n, w_n, b_n = Signal(2), Signal(2), Signal(2)
        ar_n, r_n = Signal(2), Signal(2)
        m.d.sync += [aw_n.eq(aw_n + aw_hs), w_n.eq(w_n + w_hs), b_n.eq(b_n + b_hs),
                     ar_n.eq(ar_n + ar_hs), r_n.eq(r_n + r_hs)]
        w_out = Signal(2)
        r_out = Signal(2)
        m.d.comb += [w_out.eq(aw_n - b_n), r_out.eq(ar_n - r_n)]
        m.d.comb += [
            Assert(aw_n == w_n),                       # address and data taken together
            Assert(w_out <= 1), Assert(r_out <= 1),    # never a second request before the answer
            Assert(ctl.bvalid == (w_out == 1)),        # an answer exactly while one is due
            Assert(ctl.rvalid == (r_out == 1)),
            Assert(ctl.awready == ctl.wready),
        ]

        # --- the response code and the data of docs/registers.md --------------------------
        wr_word = Signal(ADDR_WIDTH - 2)
        rd_word = Signal(ADDR_WIDTH - 2)
        with m.If(aw_hs):
            m.d.sync += wr_word.eq(ctl.awaddr[2:])
        with m.If(ar_hs):
            m.d.sync += rd_word.eq(ctl.araddr[2:])
        wr_ok = Signal()                               # the pending write names a rw register
        rd_ok = Signal()                               # the pending read names a register
        with m.Switch(wr_word):
            for r in regs:
                if r.access == "rw":
                    with m.Case(r.offset >> 2):
                        m.d.comb += wr_ok.eq(1)
        with m.Switch(rd_word):
            for r in regs:
                with m.Case(r.offset >> 2):
                    m.d.comb += rd_ok.eq(1)
        with m.If(ctl.bvalid):
            m.d.comb += Assert(ctl.bresp == Mux(wr_ok, RESP_OKAY, RESP_SLVERR))
        with m.If(ctl.rvalid):
            m.d.comb += Assert(ctl.rresp == Mux(rd_ok, RESP_OKAY, RESP_SLVERR))

        # A read returns the register's value when the read was taken.
        rd_expect = Signal(32)
        rd_check = Signal()
        with m.If(ar_hs):
            m.d.sync += [rd_check.eq(0), rd_expect.eq(0)]
            with m.Switch(ctl.araddr[2:]):
                for r in regs:
                    if r.access == "ro":
                        with m.Case(r.offset >> 2):
                            m.d.sync += [rd_check.eq(1), rd_expect.eq(r.reset)]
                    elif r.access == "rw":
                        with m.Case(r.offset >> 2):
                            m.d.sync += [rd_check.eq(1), rd_expect.eq(views[r.name])]
        with m.If(ctl.rvalid & rd_check):
            m.d.comb += Assert(ctl.rdata == rd_expect)

        # A write changes exactly its register, in the strobed bytes; SLVERR changes nothing.
        strobe_mask = Cat(*[ctl.wstrb[i].replicate(8) for i in range(4)])
        was_reset = past(m, ResetSignal(), "was_reset")
        for r in regs:
            if r.access != "rw":
                continue
            view = views[r.name]
            n = len(view)
            hit = aw_hs & (ctl.awaddr[2:] == (r.offset >> 2))
            expect = Signal(n, name=f"expect_{r.name.lower()}", reset_less=True)
            with m.If(hit):
                m.d.sync += expect.eq((view & ~strobe_mask[:n]) | (ctl.wdata[:n] & strobe_mask[:n]))
            with m.Else():
                m.d.sync += expect.eq(view)
            with m.If(pv & ~ResetSignal()):
                m.d.comb += Assert(view == expect)
            with m.If(was_reset):
                m.d.comb += Assert(view == r.reset)

        # --- reachability (Cover) ----------------------------------------------------------
        m.d.comb += [
            Cover(b_hs & (ctl.bresp == RESP_OKAY)), Cover(b_hs & (ctl.bresp == RESP_SLVERR)),
            Cover(r_hs & (ctl.rresp == RESP_OKAY)), Cover(r_hs & (ctl.rresp == RESP_SLVERR)),
            Cover(ctl.bvalid & ~ctl.bready & ctl.awvalid),   # a write waits for the answer
        ]
        return m


def proof_sets():
    return [
        ProofSet("axil", "AXI4-Lite slave: one answer per request, in order; SLVERR per docs/registers.md; "
                 "reads and writes of every register", AxiLiteHarness, mode="prove", depth=4,
                 timeout=600, quick=True),
    ]
