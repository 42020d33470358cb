"""Per-port agent: sequencer, driver (with DATA loss injection), monitor and the RESULT path
to the host (with RESULT loss injection).

The driver and the monitor sit on the harness' cocotbext-axi source and cycle-stamped
monitor (tb/cocotb/harness.py): the driver queues frames on the port's AxiStreamSource
(``TB.send_async``, which waits while the source's queue is full); the monitor turns the
harness' records into IngressTxn / EgressTxn as soon as they complete, in processing
order, while the golden model's slot state still reflects exactly that frame.
"""

from __future__ import annotations

import random

from cocotb.queue import Queue
from cocotb.triggers import Event
from cocotbext.axi import AxiStreamFrame
from pyuvm import (uvm_agent, uvm_analysis_port, uvm_driver, uvm_monitor, uvm_sequencer,
                   uvm_subscriber)

from tb.model import frames as F
from tb.model.switch import popcount
from tb.uvm.config import knob
from tb.uvm.items import EgressTxn, IngressTxn, outcome_name


def parse_header(data: bytes):
    """The AGG header of a frame with at least 64 bytes, else None."""
    if len(data) < F.HDR_LEN:
        return None
    return F.AggHeader.unpack(bytes(data[F.AGG_OFF:F.HDR_LEN]))


class AnalysisCallback(uvm_subscriber):
    """An analysis export that calls `fn` (a component with several analysis inputs)."""

    def __init__(self, name, parent, fn):
        super().__init__(name, parent)
        self._fn = fn

    def write(self, tt):
        self._fn(tt)


class PortSequencer(uvm_sequencer):
    """Sequencer of one port; also the host's receive queue (RESULTs that survived the loss
    injection), which the worker sequence reads."""

    def build_phase(self):
        self.port = self.cdb_get("port")
        self.inbox = Queue()
        self.inbox_event = Event()

    def deliver(self, txn):
        self.inbox.put_nowait(txn)
        self.inbox_event.set()


class PortDriver(uvm_driver):
    """Takes FrameItems and queues them on the port's AXI4-Stream source. A `lossy` item
    (a worker's DATA frame) is lost with probability `data_loss`, a `force_lost` one
    always, and a lost item never reaches the switch. Every item, lost or sent, is
    published on `ap`."""

    def build_phase(self):
        self.port = self.cdb_get("port")
        self.tb = self.cdb_get("tb")
        self.registry = self.cdb_get("registry")
        self.rng = random.Random(f"{self.tb.seed}/data-loss/{self.port}")
        self.ap = uvm_analysis_port("ap", self)

    def start_of_simulation_phase(self):
        self.loss = float(knob(self, "data_loss"))
        depth = int(knob(self, "source_queue"))
        self.tb.sources[self.port].queue_occupancy_limit_frames = max(1, depth)

    async def run_phase(self):
        while True:
            item = await self.seq_item_port.get_next_item()
            item.port = self.port
            item.lost = item.force_lost or (item.lossy and self.loss > 0
                                            and self.rng.random() < self.loss)
            if not item.lost:
                self.registry.add(item)
                frame = item.frame
                if isinstance(frame, tuple):   # (bytes, per-byte tkeep)
                    frame = AxiStreamFrame(frame[0], tkeep=list(frame[1]))
                await self.tb.send_async(self.port, frame)
            self.ap.write(item)
            self.seq_item_port.item_done()


class PortMonitor(uvm_monitor):
    """Publishes every ingress frame of its port on `ap_in` (IngressTxn: the golden
    model's verdict, the frame's arrival position in its round, what the environment meant
    it to be) and every egress frame on `ap_out` (EgressTxn)."""

    def build_phase(self):
        self.port = self.cdb_get("port")
        self.tb = self.cdb_get("tb")
        self.registry = self.cdb_get("registry")
        self.ap_in = uvm_analysis_port("ap_in", self)
        self.ap_out = uvm_analysis_port("ap_out", self)

    def connect_phase(self):
        self.tb.add_ingress_hook(self._ingress)
        self.tb.add_egress_hook(self._egress)

    def _ingress(self, rec):
        if rec.port != self.port:
            return
        txn = IngressTxn(rec, outcome_name(rec.outcome), self.registry.get(rec.data),
                         hdr=parse_header(rec.data))
        if txn.outcome in ("new", "join", "complete"):
            model = self.tb.model
            job = model.job_table[txn.hdr.job]
            txn.gslot = job.slot_base + txn.hdr.slot
            st = model.state[txn.gslot][txn.hdr.flags & F.FLAG_BANK]
            txn.position = popcount(st.bitmap & model.job_mask(txn.hdr.job)) - 1
        self.ap_in.write(txn)

    def _egress(self, rec):
        if rec.port == self.port:
            self.ap_out.write(EgressTxn(rec, parse_header(rec.data)))


class ResultChannel(uvm_subscriber):
    """The network between an egress port and its host: each RESULT is lost with
    probability `result_loss`, else delivered to the host (the sequencer's inbox). Every
    RESULT, marked delivered or not, is published on `ap`."""

    def build_phase(self):
        self.port = self.cdb_get("port")
        self.tb = self.cdb_get("tb")
        self.rng = random.Random(f"{self.tb.seed}/result-loss/{self.port}")
        self.ap = uvm_analysis_port("ap", self)
        self.sequencer = None

    def start_of_simulation_phase(self):
        self.loss = float(knob(self, "result_loss"))

    def write(self, txn):
        txn.delivered = not (self.loss > 0 and self.rng.random() < self.loss)
        if txn.delivered and self.sequencer is not None:
            self.sequencer.deliver(txn)
        self.ap.write(txn)


class PortAgent(uvm_agent):
    def build_phase(self):
        super().build_phase()
        self.port = self.cdb_get("port")
        self.monitor = PortMonitor("monitor", self)
        self.channel = ResultChannel("channel", self)
        if self.active():
            self.sequencer = PortSequencer("sequencer", self)
            self.driver = PortDriver("driver", self)

    def connect_phase(self):
        self.monitor.ap_out.connect(self.channel.analysis_export)
        if self.active():
            self.driver.seq_item_port.connect(self.sequencer.seq_item_export)
            self.channel.sequencer = self.sequencer
