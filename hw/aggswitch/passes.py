"""Per-port passes over the accumulator banks (docs/engine-v2.md).

Each port has its own pass engine: it takes the jobs the decision stage schedules for the
port's frames, and from a job's start cycle it handles one accumulator line per cycle,
without ever stalling: read the payload beat from the port's ingress buffer, decode the
line's elements to exact fixed point, add them into the accumulator line (or replace it,
for the first frame of a round), and, for a frame that completes a round or triggers a
resend, hand the sums to the result emitter.

The accumulators are split into `ports` banks; line k of a round lives in bank
k mod ports. A pass of port p starts only in phase `start_phase(p)`, so in any cycle the
ports are at pairwise different banks (AccumulatorBanks needs no arbitration), and every
line of every pass is handled at `start + k`. The decision stage starts the passes of
one (slot, bank) at least `RMW_GAP` cycles apart, so a pass reads every line after the
pass before it has written it back: that is what keeps the sums exact
(docs/engine-v2.md, "Order of passes on one slot").

Stages of a line (a job loads in its start cycle; its line 0 is in S0 the cycle after):

    S0  payload buffer address
    S1  beat from the buffer into the decoder's field registers; the last line frees
        the frame's buffer
    S2  decoded contributions (registered); accumulator read (bank k mod ports)
    S3  accumulator line + contributions, written back; the sums to the emitter
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory

from .params import Params
from .frame import buf_addr_bits, beats_bits, count_bits
from .codec import LineDecoder, is_mx, elem_shift
from .schedule import start_phase, not_before

__all__ = ["RMW_GAP", "JOB_QUEUE_DEPTH", "bank_rows", "port_job", "emit_line", "PortPass",
           "AccumulatorBanks"]

# Cycles between the starts of two passes on one (slot, bank): line k is read in S2 of
# one pass and written in S3, so the next pass may read it (its S2) one cycle after that.
RMW_GAP = 2
# Jobs a port may have decided but not started.
JOB_QUEUE_DEPTH = 4
# Cycles from the decision's commit to the earliest start the queue can show the job in.
JOB_LEAD = 3


def bank_rows(p: Params):
    """Rows of one (slot, bank) region in each accumulator bank."""
    return -(-p.slot_lines // p.ports)


def port_job(p: Params):
    """A pass job, as the decision stage hands it to a port."""
    return data.StructLayout({
        "e": 32,                                   # start period (phase: start_phase(port))
        "lines": range(p.slot_lines + 1),          # lines to handle (>= 1)
        "row_base": range(p.slots * 2 * bank_rows(p)),
        "start": buf_addr_bits(p),                 # first payload beat in the ingress buffer
        "scales": 8 * p.mx_blocks if p.mx_ok else 0,
        "dtype": 3,
        "scale": 8,
        "count": count_bits(p),                    # elements of the round
        "replace": 1,                              # first frame of a round
        "write": 1,                                # adds its payload (new round or join)
        "emit": 1,                                 # completes the round or is a resend
        "result": 1,                               # completes the round (for the counters)
        "nan": 1,                                  # the round's NAN flag
        "dest": p.ports,                           # egress ports of the RESULT
        "release_beats": beats_bits(p),
    })


def emit_line(p: Params):
    """One line of sums on its way to the result emitter."""
    return data.StructLayout({
        "valid": 1,
        "sums": data.ArrayLayout(signed(p.acc_width), p.lanes),
        "line": range(p.slot_lines),
        "last": 1,
        "dtype": 3,
        "scale": 8,
        "count": count_bits(p),
        "result": 1,
        "nan": 1,
        "dest": p.ports,
    })


def _line_stage(p: Params):
    return data.StructLayout({
        "valid": 1,
        "line": range(p.slot_lines),
        "bank": range(p.ports),
        "row": range(p.slots * 2 * bank_rows(p)),
        "last": 1,
        "job": port_job(p),
    })


class PortPass(wiring.Component):
    def __init__(self, p: Params, port: int):
        self.p = p
        self.port = port
        rows = p.slots * 2 * bank_rows(p)
        super().__init__({
            "job": In(port_job(p)), "job_valid": In(1), "job_ready": Out(1),
            "e_now": In(32), "phase": In(range(p.ports)),
            # ingress payload buffer (one cycle read latency)
            "buf_addr": Out(buf_addr_bits(p)), "buf_data": In(p.data_width),
            "release": Out(1), "release_beats": Out(beats_bits(p)),
            # accumulator banks: read in S2, data and write in S3
            "rd_valid": Out(1), "rd_bank": Out(range(p.ports)), "rd_row": Out(range(rows)),
            "rd_data": In(p.lanes * p.acc_width),
            "wr_en": Out(1), "wr_bank": Out(range(p.ports)), "wr_row": Out(range(rows)),
            "wr_data": Out(p.lanes * p.acc_width),
            # S3: sums of a line that goes into a RESULT
            "emit": Out(emit_line(p)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        layout = port_job(p)

        m.submodules.queue = queue = SyncFIFOBuffered(width=layout.size, depth=JOB_QUEUE_DEPTH)
        m.d.comb += [queue.w_data.eq(self.job), queue.w_en.eq(self.job_valid),
                     self.job_ready.eq(queue.w_rdy)]
        head = layout(queue.r_data)

        # --- load and issue: one line per cycle from the job's start ------------------
        cur = Signal(layout)
        busy = Signal()
        k = Signal(range(p.slot_lines))
        bank = Signal(range(P))
        row = Signal(range(bank_rows(p)))
        last = busy & (k == cur.lines - 1)
        starting = (queue.r_rdy & ~(busy & ~last) & (self.phase == start_phase(self.port, P))
                    & not_before(self.e_now, head.e))
        with m.If(busy):
            m.d.sync += k.eq(k + 1)
            with m.If(bank == P - 1):
                m.d.sync += [bank.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += bank.eq(bank + 1)
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(starting):
            m.d.comb += queue.r_en.eq(1)
            m.d.sync += [cur.eq(head), busy.eq(1), k.eq(0), bank.eq(0), row.eq(0)]

        s0 = Signal(_line_stage(p))
        m.d.comb += [s0.valid.eq(busy), s0.line.eq(k), s0.bank.eq(bank),
                     s0.row.eq(cur.row_base + row), s0.last.eq(last), s0.job.eq(cur)]
        # Line k of the round is in payload beat k >> elem_shift, after the MX scale line.
        beat_k = (k >> elem_shift(cur.dtype)) + Mux(is_mx(cur.dtype), p.scale_beats if p.mx_ok else 0, 0)
        m.d.comb += self.buf_addr.eq(cur.start + beat_k)

        # --- S1: the beat, into the decoder -------------------------------------------
        s1 = Signal(_line_stage(p))
        m.d.sync += s1.eq(s0)
        m.d.comb += [self.release.eq(s1.valid & s1.last), self.release_beats.eq(s1.job.release_beats)]
        m.submodules.decoder = dec = LineDecoder(p)
        assert LineDecoder.LATENCY == 1
        m.d.comb += [dec.beat.eq(self.buf_data), dec.dtype.eq(s1.job.dtype),
                     dec.sub.eq(s1.line[:2] & ((1 << elem_shift(s1.job.dtype)) - 1)),
                     dec.scale.eq(s1.job.scale)]
        if p.mx_ok:
            blk_shift = (p.block_lines - 1).bit_length()
            m.d.comb += dec.block_scale.eq(s1.job.scales.word_select(s1.line >> blk_shift, 8))

        # --- S2: contributions; accumulator read ---------------------------------------
        s2 = Signal(_line_stage(p))
        m.d.sync += s2.eq(s1)
        contrib = [Signal(signed(32), name=f"contrib{i}") for i in range(p.lanes)]
        for i in range(p.lanes):
            m.d.sync += contrib[i].eq(Mux(s2.job.write, dec.q[i], 0))
        m.d.comb += [self.rd_valid.eq(s2.valid & (s2.job.write | s2.job.emit)),
                     self.rd_bank.eq(s2.bank), self.rd_row.eq(s2.row)]

        # --- S3: add, write back, emit ---------------------------------------------------
        s3 = Signal(_line_stage(p))
        m.d.sync += s3.eq(s2)
        sums = []
        for i in range(p.lanes):
            old = self.rd_data.word_select(i, p.acc_width).as_signed()
            s = Signal(signed(p.acc_width), name=f"sum{i}")
            m.d.comb += s.eq(Mux(~s3.job.write, old, Mux(s3.job.replace, 0, old) + contrib[i]))
            sums.append(s)
        m.d.comb += [self.wr_en.eq(s3.valid & s3.job.write), self.wr_bank.eq(s3.bank),
                     self.wr_row.eq(s3.row), self.wr_data.eq(Cat(*sums))]
        e = self.emit
        m.d.comb += [e.valid.eq(s3.valid & s3.job.emit), e.line.eq(s3.line), e.last.eq(s3.last),
                     e.dtype.eq(s3.job.dtype), e.scale.eq(s3.job.scale), e.count.eq(s3.job.count),
                     e.result.eq(s3.job.result), e.nan.eq(s3.job.nan), e.dest.eq(s3.job.dest)]
        for i in range(p.lanes):
            m.d.comb += e.sums[i].eq(sums[i])
        return m


class AccumulatorBanks(wiring.Component):
    """`ports` banks of accumulator lines, each read and written by whichever port's turn
    it is: the rotation guarantees at most one reader and one writer per bank per cycle,
    so an AND-OR of the ports' requests selects it."""

    def __init__(self, p: Params):
        self.p = p
        rows = p.slots * 2 * bank_rows(p)
        width = p.lanes * p.acc_width
        members = {}
        for n in range(p.ports):
            members.update({
                f"rd_valid{n}": In(1), f"rd_bank{n}": In(range(p.ports)), f"rd_row{n}": In(range(rows)),
                f"rd_data{n}": Out(width),
                f"wr_en{n}": In(1), f"wr_bank{n}": In(range(p.ports)), f"wr_row{n}": In(range(rows)),
                f"wr_data{n}": In(width),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        rows = p.slots * 2 * bank_rows(p)
        width = p.lanes * p.acc_width
        g = lambda name, n: getattr(self, f"{name}{n}")
        data_out = []
        for b in range(P):
            mem = Memory(shape=width, depth=rows, init=[])
            m.submodules[f"bank{b}"] = mem
            rp = mem.read_port()
            wp = mem.write_port()
            rd_sel = [g("rd_valid", n) & (g("rd_bank", n) == b) for n in range(P)]
            wr_sel = [g("wr_en", n) & (g("wr_bank", n) == b) for n in range(P)]
            m.d.comb += [
                rp.addr.eq(_or_all([Mux(rd_sel[n], g("rd_row", n), 0) for n in range(P)])),
                wp.addr.eq(_or_all([Mux(wr_sel[n], g("wr_row", n), 0) for n in range(P)])),
                wp.data.eq(_or_all([Mux(wr_sel[n], g("wr_data", n), 0) for n in range(P)])),
                wp.en.eq(Cat(*wr_sel).any()),
            ]
            data_out.append(rp.data)
        # Each port's data comes from the bank it read (the bank index one cycle later).
        for n in range(P):
            bank_s3 = Signal(range(P), name=f"rd_bank_q{n}")
            m.d.sync += bank_s3.eq(g("rd_bank", n))
            m.d.comb += g("rd_data", n).eq(Array(data_out)[bank_s3])
        return m


def _or_all(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
