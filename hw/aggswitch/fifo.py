"""A FIFO whose storage goes to block RAM in synthesis."""

from amaranth.lib.fifo import SyncFIFOBuffered

__all__ = ["BlockRAMFIFO"]


class BlockRAMFIFO(SyncFIFOBuffered):
    """Amaranth's SyncFIFOBuffered (the same ports and behaviour), with its storage marked
    for block RAM. Yosys would put a FIFO a few dozen entries deep in LUT RAM, where on
    the ECP5 each 16 x 4 bits takes six LUT sites: the egress queues alone were about 5 %
    of the logic at four 128-bit ports. `ram_style` asks for block RAM instead.

    `no_rw_check`: Yosys need not emulate a read of the address written in the same cycle
    (a register on the write data and a bypass mux, per bit). The FIFO never uses such a
    read: its read port is enabled only when the queue holds an entry, and then the write
    address differs from the read address unless the queue is full, when nothing is
    written. Simulation does not change: the attributes are for synthesis only."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self.depth > 1:                   # depth 1 is a register, without storage
            m.submodules.storage.attrs.update({"ram_style": "block", "no_rw_check": True})
        return m
