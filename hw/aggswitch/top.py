"""Top level `aggswitch`: the port list of SPEC §2 and the pipeline stages in data-flow order.

    s{P}_axis -> IngressParser[P] (parse, admit, buffer) --descriptors--> AggregationEngine
                 (decode -> aggregate -> encode) --RESULT beats--> ResultDeparser[P] -> m{P}_axis
    s_axil    -> ControlPlane (register map of regmap.py: addresses, job table, counters)
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import Params
from .control import ControlPlane
from .ingress import IngressParser
from .engine import AggregationEngine
from .egress import ResultDeparser
from .frame import slot_bits

AXIL_ADDR_WIDTH = 16


def top_signature(p: Params):
    members = {}
    for n in range(p.ports):
        members[f"s{n}_axis_tdata"] = In(p.data_width)
        members[f"s{n}_axis_tkeep"] = In(p.beat_bytes)
        members[f"s{n}_axis_tvalid"] = In(1)
        members[f"s{n}_axis_tready"] = Out(1)
        members[f"s{n}_axis_tlast"] = In(1)
    for n in range(p.ports):
        members[f"m{n}_axis_tdata"] = Out(p.data_width)
        members[f"m{n}_axis_tkeep"] = Out(p.beat_bytes)
        members[f"m{n}_axis_tvalid"] = Out(1)
        members[f"m{n}_axis_tready"] = In(1)
        members[f"m{n}_axis_tlast"] = Out(1)
    members.update({
        "s_axil_awaddr": In(AXIL_ADDR_WIDTH), "s_axil_awprot": In(3),
        "s_axil_awvalid": In(1), "s_axil_awready": Out(1),
        "s_axil_wdata": In(32), "s_axil_wstrb": In(4),
        "s_axil_wvalid": In(1), "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
        "s_axil_araddr": In(AXIL_ADDR_WIDTH), "s_axil_arprot": In(3),
        "s_axil_arvalid": In(1), "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32), "s_axil_rresp": Out(2),
        "s_axil_rvalid": Out(1), "s_axil_rready": In(1),
    })
    return wiring.Signature(members)


class AggSwitch(wiring.Component):
    def __init__(self, params: Params = Params()):
        self.params = params
        super().__init__(top_signature(params))

    def elaborate(self, platform):
        m = Module()
        p = self.params
        P = p.ports

        m.submodules.control = ctl = ControlPlane(p, AXIL_ADDR_WIDTH)
        for name in ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bready",
                     "araddr", "arvalid", "rready"):
            m.d.comb += getattr(ctl, name).eq(getattr(self, f"s_axil_{name}"))
        for name in ("awready", "wready", "bresp", "bvalid", "arready", "rdata", "rresp", "rvalid"):
            m.d.comb += getattr(self, f"s_axil_{name}").eq(getattr(ctl, name))

        job_enable, job_mask = ctl.job_enable, ctl.job_mask
        job_base, job_count = ctl.job_base, ctl.job_count

        parsers = []
        for n in range(P):
            ing = IngressParser(p, n)
            m.submodules[f"ingress{n}"] = ing
            parsers.append(ing)
        m.submodules.engine = eng = AggregationEngine(p)
        deparsers = []
        for n in range(P):
            eg = ResultDeparser(p)
            m.submodules[f"egress{n}"] = eg
            deparsers.append(eg)

        m.d.comb += [eng.cycles.eq(ctl.cycles), eng.job_mask.eq(job_mask)]
        # Arrival order (docs/SPEC.md §10.3) as a short tag: every port's verdict comes the
        # same number of cycles after the frame's last beat, so the order of commit cycles
        # is the order of last beats; frames committed in one cycle share a tag (ties go
        # to the lower port in the engine).
        order = Signal(p.order_bits)
        with m.If(Cat(*[ing.commit for ing in parsers]).any()):
            m.d.sync += order.eq(order + 1)
        for ing in parsers:
            m.d.comb += ing.order.eq(order)
        # events for the counters
        m.d.comb += [
            ctl.ev_rx.eq(Cat(*[ing.rx for ing in parsers])),
            ctl.ev_drop_ingress.eq(Cat(*[ing.drop for ing in parsers])),
            ctl.ev_drop_ingress_reason.eq(Cat(*[ing.drop_reason for ing in parsers])),
            ctl.ev_tx.eq(Cat(*[eg.tx for eg in deparsers])),
            ctl.ev_accept.eq(eng.ev_accept), ctl.ev_resend.eq(eng.ev_resend),
            ctl.ev_drop_engine.eq(eng.ev_drop), ctl.ev_drop_engine_reason.eq(eng.ev_drop_reason),
            ctl.ev_drop_egress.eq(eng.ev_drop_egress),
            ctl.ev_result.eq(eng.ev_result), ctl.ev_overflow.eq(eng.ev_overflow), ctl.ev_nan.eq(eng.ev_nan),
        ]
        for n, (ing, eg) in enumerate(zip(parsers, deparsers)):
            m.d.comb += [
                # ingress
                ing.tdata.eq(getattr(self, f"s{n}_axis_tdata")),
                ing.tkeep.eq(getattr(self, f"s{n}_axis_tkeep")),
                ing.tvalid.eq(getattr(self, f"s{n}_axis_tvalid")),
                ing.tlast.eq(getattr(self, f"s{n}_axis_tlast")),
                getattr(self, f"s{n}_axis_tready").eq(ing.tready),
                ing.enable.eq(eng.ready), ing.cycles.eq(ctl.cycles), ing.agg_port.eq(ctl.agg_port),
                ing.job_enable.eq(job_enable), ing.job_mask.eq(job_mask),
                ing.job_base.eq(job_base), ing.job_count.eq(job_count),
                # ingress -> engine
                getattr(eng, f"desc{n}").eq(ing.desc),
                getattr(eng, f"desc{n}_valid").eq(ing.desc_valid),
                getattr(eng, f"head{n}_valid").eq(ing.head_valid),
                getattr(eng, f"head{n}_order").eq(ing.head_order),
                ing.desc_ready.eq(getattr(eng, f"desc{n}_ready")),
                ing.rd_addr.eq(getattr(eng, f"buf{n}_addr")),
                getattr(eng, f"buf{n}_data").eq(ing.rd_data),
                ing.release.eq(getattr(eng, f"buf{n}_release")),
                ing.release_beats.eq(getattr(eng, f"buf{n}_release_beats")),
                # engine -> egress
                eg.data_in.eq(eng.eg_data[n]), eg.data_en.eq(eng.eg_data_en[n]),
                eg.desc_in.eq(getattr(eng, f"eg_desc{n}")), eg.desc_en.eq(eng.eg_desc_en[n]),
                eg.done_en.eq(eng.eg_done_en[n]), eg.done_overflow.eq(eng.eg_done_overflow[n]),
                eg.done_scales.eq(eng.eg_done_scales[n]),
                eng.eg_room[n].eq(eg.room), eng.eg_expired[n].eq(eg.expired), eng.eg_pop[n].eq(eg.pop),
                eng.eg_takes[n].eq(eg.takes),
                eg.watchdog.eq(ctl.egress_watchdog),
                eg.cycles.eq(ctl.cycles), eg.switch_mac.eq(ctl.switch_mac),
                eg.switch_ip.eq(ctl.switch_ip), eg.agg_port.eq(ctl.agg_port),
                # egress
                getattr(self, f"m{n}_axis_tdata").eq(eg.tdata),
                getattr(self, f"m{n}_axis_tkeep").eq(eg.tkeep),
                getattr(self, f"m{n}_axis_tvalid").eq(eg.tvalid),
                getattr(self, f"m{n}_axis_tlast").eq(eg.tlast),
                eg.tready.eq(getattr(self, f"m{n}_axis_tready")),
            ]
        return m
