"""Per-port passes over the accumulator banks (docs/engine-v2.md).

Each port has its own pass engine: it takes the jobs the decision stage schedules for the
port's frames, and from a job's start cycle it handles one payload beat per cycle in
every dtype, without ever stalling: read the beat from the port's ingress buffer, decode
its elements to exact fixed point, add them into the accumulators (or replace them, for
the first frame of a round), and, for a frame that completes a round or triggers a
resend, hand the sums to the result emitter.

The accumulators are split into `ports` banks; beat k of a round lives in bank
k mod ports. A pass of port p starts only in phase `start_phase(p)`, so in any cycle the
ports are at pairwise different banks (AccumulatorBanks needs no arbitration), and every
beat of every pass is handled at `start + k`. The decision stage starts the passes of
one (slot, bank) at least `RMW_GAP` cycles apart, so a pass reads every beat's sums after
the pass before it has written them back: that is what keeps the sums exact
(docs/engine-v2.md, "Order of passes on one slot").

A bank word holds four *lines* of `lanes` accumulators (one beat of MX elements, two of
BF16, four of INT32 or FP32) with a write enable per line. A round in a dtype with s
lines per beat (1, 2 or 4) puts the beats of each bank side by side: the bank's i-th beat
of the round takes lines [s*i, s*i + s) of the (slot, bank) region, counted across its
words. So a slot needs the same memory in every dtype, and a beat is one word access.
The decoder and the encoder work in *beat order* (lane i = element i of the beat); the
contributions are placed on the beat's lines in the word on the way in (`to_lines`), and
the sums brought back to beat order on the way out (`to_beat`).

Stages of a beat (a job loads in its start cycle; its beat 0 is in S0 the cycle after):

    S0  the beat from the payload buffer (its address was issued the cycle before),
        registered
    S1  the beat into the decoder's field registers; the last beat frees the frame's
        buffer
    S2  decoded contributions, registered in beat order; accumulator read
    S3  contributions rotated to their lines; accumulator word + contributions, written
        back; the sums to the emitter
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory

from .params import Params, DTYPE_BF16
from .frame import buf_addr_bits, beats_bits, count_bits
from .codec import BeatDecoder, is_mx, elem_shift, block_parts
from .schedule import start_phase, not_before
from .resbuf import result_entries

__all__ = ["RMW_GAP", "JOB_QUEUE_DEPTH", "WORD_LINES", "READ_BANK", "WRITE_BANK",
           "bank_in_stage", "bank_rows", "port_job", "emit_beat",
           "line_selects", "to_lines", "to_beat", "PortPass", "AccumulatorBanks"]

# Cycles between the starts of two passes on one (slot, bank): beat k is read in S2 of
# one pass and written in S3, so the next pass may read it (its S2) one cycle after that.
RMW_GAP = 2
# Jobs a port may have decided but not started.
JOB_QUEUE_DEPTH = 4
# Cycles from the decision's commit to the earliest start the queue can show the job in.
JOB_LEAD = 3
# Lines of `lanes` accumulators per bank word: one beat of MX elements.
WORD_LINES = 4
# A pass loads its job in a cycle of phase start_phase(port) = -port mod ports, and beat k
# (bank k mod ports) is in S0 k + 1 cycles later: in any cycle, a busy port n's beat in S2
# is at bank (phase + n + READ_BANK) mod ports, its beat in S3 at (phase + n + WRITE_BANK).
READ_BANK = -3
WRITE_BANK = READ_BANK - 1


def bank_in_stage(phase, port, ports, offset):
    """The bank a busy port's beat is at, `offset` READ_BANK (S2) or WRITE_BANK (S3)."""
    return (phase + port + offset) % ports


def bank_rows(p: Params):
    """Words of one (slot, bank) region in each accumulator bank: enough for the round's
    beats of that bank, side by side, in every dtype (s lines per beat)."""
    rows = 0
    for s in (1, 2, 4) if p.mx_ok else (1, 2):
        beats = -(-p.slot_lines // s)
        per_bank = -(-beats // p.ports)
        rows = max(rows, -(-per_bank * s // WORD_LINES))
    return rows


def port_job(p: Params):
    """A pass job, as the decision stage hands it to a port."""
    return data.StructLayout({
        "e": 32,                                   # start period (phase: start_phase(port))
        "beats": range(p.slot_lines + 1),          # payload beats to handle (>= 1)
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
        "entry": range(result_entries(p)),         # its result-buffer entry
        "release_beats": beats_bits(p),
    })


def emit_beat(p: Params):
    """One beat of sums (beat order) on its way to the result emitter."""
    return data.StructLayout({
        "valid": 1,
        "sums": data.ArrayLayout(signed(p.acc_width), p.beat_lanes),
        "beat": range(p.slot_lines),
        "last": 1,
        "dtype": 3,
        "scale": 8,
        "count": count_bits(p),
        "result": 1,
        "nan": 1,
        "dest": p.ports,
        "entry": range(result_entries(p)),
    })


def _beat_stage(p: Params):
    return data.StructLayout({
        "valid": 1,
        "beat": range(p.slot_lines),
        "bank": range(p.ports),
        "row": range(p.slots * 2 * bank_rows(p)),
        "first_line": range(WORD_LINES),           # the beat's first line in the word
        "shift": 2,                                # log2 of the beat's lines (elem_shift)
        "lines": WORD_LINES,                       # the word's lines the beat covers
        "last": 1,
        "job": port_job(p),
    })


def line_selects(shift):
    """`to_lines`' selects for a beat of 2**`shift` lines: (s >= 2, s = 4)."""
    return shift != 0, shift[1]


def to_lines(groups, wide, mx):
    """Word line j <- beat-order group j mod s, for a beat of s lines (1, 2 or 4; `wide`:
    s >= 2, `mx`: s = 4, from `line_selects`). The beat starts at a line that is a multiple
    of s, so on the lines it covers this is group j - first_line; the others get a group
    too, but their write enables are off. No line depends on where the beat starts: line 0
    is always group 0, lines 1 and 2 a choice of two groups, line 3 of three (a rotation by
    first_line would take up to four)."""
    assert len(groups) == WORD_LINES == 4
    g0, g1, g2, g3 = groups
    return [g0, Mux(wide, g1, g0), Mux(mx, g2, g0), Mux(mx, g3, Mux(wide, g1, g0))]


def to_beat(lines, first_line):
    """Beat-order group g <- word line first_line + g for the groups a beat of s lines has
    (g < s; first_line a multiple of s): group 0 is any line, group 1 line 1 or 3, groups 2
    and 3 (s = 4, first_line 0) lines 2 and 3. The other groups carry no meaning."""
    assert len(lines) == WORD_LINES == 4
    l0, l1, l2, l3 = lines
    group0 = Mux(first_line[1], Mux(first_line[0], l3, l2), Mux(first_line[0], l1, l0))
    return [group0, Mux(first_line[1], l3, l1), l2, l3]


class PortPass(wiring.Component):
    def __init__(self, p: Params, port: int):
        self.p = p
        self.port = port
        rows = p.slots * 2 * bank_rows(p)
        word = WORD_LINES * p.lanes * p.acc_width
        super().__init__({
            "job": In(port_job(p)), "job_valid": In(1), "job_ready": Out(1),
            "e_now": In(32), "phase": In(range(p.ports)),
            # ingress payload buffer (one cycle read latency)
            "buf_addr": Out(buf_addr_bits(p)), "buf_data": In(p.data_width),
            "release": Out(1), "release_beats": Out(beats_bits(p)),
            # accumulator banks: read in S2, data and write in S3
            "rd_valid": Out(1), "rd_bank": Out(range(p.ports)), "rd_row": Out(range(rows)),
            "rd_data": In(word),
            "wr_en": Out(WORD_LINES), "wr_bank": Out(range(p.ports)), "wr_row": Out(range(rows)),
            "wr_data": Out(word),
            # S3: sums of a beat that goes into a RESULT
            "emit": Out(emit_beat(p)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        L = p.lanes
        layout = port_job(p)

        m.submodules.queue = queue = SyncFIFOBuffered(width=layout.size, depth=JOB_QUEUE_DEPTH)
        # `job_ready` is on COMMIT's path, so it is a register: the queue has room next
        # cycle iff its level after this cycle's push and pop is below the depth (the
        # queue's w_rdy is level != depth).
        job_room = Signal(init=1)
        push = self.job_valid & job_room
        pop = queue.r_en & queue.r_rdy
        m.d.sync += job_room.eq((queue.level + push - pop)[:len(queue.level)] != JOB_QUEUE_DEPTH)
        m.d.comb += [queue.w_data.eq(self.job), queue.w_en.eq(push),
                     self.job_ready.eq(job_room)]
        head = layout(queue.r_data)

        # --- load and issue: one beat per cycle from the job's start ------------------
        cur = Signal(layout)
        busy = Signal()
        k = Signal(range(p.slot_lines))
        bank = Signal(range(P))
        # The bank's beats so far, in lines: s per beat (1, 2 or 4 by dtype).
        line_pos = Signal(range(bank_rows(p) * WORD_LINES + WORD_LINES))
        s_lines = Signal(range(WORD_LINES + 1))
        m.d.comb += s_lines.eq(1 << elem_shift(cur.dtype))
        last = busy & (k == cur.beats - 1)
        starting = (queue.r_rdy & ~(busy & ~last) & (self.phase == start_phase(self.port, P))
                    & not_before(self.e_now, head.e))
        with m.If(busy):
            m.d.sync += k.eq(k + 1)
            with m.If(bank == P - 1):
                m.d.sync += [bank.eq(0), line_pos.eq(line_pos + s_lines)]
            with m.Else():
                m.d.sync += bank.eq(bank + 1)
            with m.If(last):
                m.d.sync += busy.eq(0)
        with m.If(starting):
            m.d.comb += queue.r_en.eq(1)
            m.d.sync += [cur.eq(head), busy.eq(1), k.eq(0), bank.eq(0), line_pos.eq(0)]

        s0 = Signal(_beat_stage(p))
        covered = Mux(s_lines == 4, 0b1111, Mux(s_lines == 2, 0b11, 0b1))
        first_line = line_pos[:2]
        m.d.comb += [s0.valid.eq(busy), s0.beat.eq(k), s0.bank.eq(bank),
                     s0.shift.eq(elem_shift(cur.dtype)),
                     s0.row.eq(cur.row_base + (line_pos >> 2)), s0.first_line.eq(first_line),
                     s0.lines.eq((covered << first_line)[:WORD_LINES]),
                     s0.last.eq(last), s0.job.eq(cur)]
        # Beat k of the round is payload beat k, after the MX scale line. The buffer is
        # read a cycle ahead, with the address S0 will have next cycle (the next beat of
        # this job, or beat 0 of the job that starts), so that its block RAM's output is
        # registered (`beat`) before the decoder, not decoded straight from the RAM.
        def first_beat(job):
            return job.start + Mux(is_mx(job.dtype), p.scale_beats if p.mx_ok else 0, 0)
        # An idle pass holds its address (`addr + busy`, one carry chain as before): the
        # buffer's output, and so the decoder, stay still while the port has no job.
        addr = Signal.like(self.buf_addr)              # S0's beat
        next_addr = Mux(starting, first_beat(head), addr + busy)
        m.d.sync += addr.eq(next_addr)
        m.d.comb += self.buf_addr.eq(next_addr)
        beat = Signal(p.data_width, reset_less=True)   # datapath: no reset
        m.d.sync += beat.eq(self.buf_data)

        # --- S1: the beat, into the decoder -------------------------------------------
        s1 = Signal(_beat_stage(p))
        m.d.sync += s1.eq(s0)
        m.d.comb += [self.release.eq(s1.valid & s1.last), self.release_beats.eq(s1.job.release_beats)]
        m.submodules.decoder = dec = BeatDecoder(p)
        assert BeatDecoder.LATENCY == 1
        m.d.comb += [dec.beat.eq(beat), dec.dtype.eq(s1.job.dtype), dec.scale.eq(s1.job.scale)]
        # What the decoder's lanes take from the job besides the dtype is selected in S0 and
        # registered with S1, so that their field registers are the only logic after it:
        # the dtype's byte-order selects, and the beat's MX block scales (a mux over the
        # slot's blocks, by the beat: 8 of them at 256 elements and 128 bits, where these
        # paths were 9 levels in front of the lanes' registers).
        dec_mx = Signal(name="dec_mx", reset_less=True)
        dec_bf16 = Signal(name="dec_bf16", reset_less=True)
        m.d.sync += [dec_mx.eq(is_mx(s0.job.dtype)), dec_bf16.eq(s0.job.dtype == DTYPE_BF16)]
        m.d.comb += [dec.mx.eq(dec_mx), dec.bf16.eq(dec_bf16)]
        parts, per_part = block_parts(p)
        if p.mx_ok:
            if parts > 1:
                scales = s0.job.scales.word_select(s0.beat, 8 * parts) if p.mx_blocks % parts == 0 \
                    else Cat(s0.job.scales, C(0, 8 * parts)).word_select(s0.beat, 8 * parts)
            else:
                per_block = (p.block_beats - 1).bit_length()
                scales = s0.job.scales.word_select(s0.beat >> per_block, 8)
        else:
            scales = C(0, 8 * parts)
        block_scales = Signal(8 * parts, name="dec_block_scales", reset_less=True)
        m.d.sync += block_scales.eq(scales)
        # and the lanes' exponent bases (BeatDecoder.bases): one adder per part here, not
        # one per lane
        base_any, base_small = BeatDecoder.bases(
            p, s0.job.dtype, s0.job.scale, [scales.word_select(j, 8) for j in range(parts)])
        for j in range(parts):
            ba = Signal(signed(10), name=f"dec_base_any{j}", reset_less=True)
            bs = Signal(signed(10), name=f"dec_base_small{j}", reset_less=True)
            m.d.sync += [ba.eq(base_any[j]), bs.eq(base_small[j])]
            m.d.comb += [dec.block_scale[j].eq(block_scales.word_select(j, 8)),
                         dec.base_any[j].eq(ba), dec.base_small[j].eq(bs)]

        # --- S2: contributions, registered in beat order; accumulator read -----------------
        s2 = Signal(_beat_stage(p))
        m.d.sync += s2.eq(s1)
        groups = [Cat(*(dec.q[g * L + i] for i in range(L))) for g in range(WORD_LINES)]
        contrib = [Signal(data.ArrayLayout(signed(32), L), name=f"contrib{g}", reset_less=True)
                   for g in range(WORD_LINES)]             # datapath: no reset
        # A pass that only emits (a resend) adds 0: the registers' synchronous reset, so the
        # adder needs no bypass. The reset is a register of its own, active high: the FPGA
        # flip-flops' reset input is, and an active-low one (~write) costs an inverter LUT
        # per flip-flop (Yosys' synth_ecp5 does not share them: 1,024 LUTs a pass at 256 bits).
        no_write = Signal(init=1)
        m.d.sync += no_write.eq(~s1.job.write)
        for g, group in enumerate(groups):
            m.d.sync += contrib[g].eq(Mux(no_write, 0, group))
        m.d.comb += [self.rd_valid.eq(s2.valid & (s2.job.write | s2.job.emit)),
                     self.rd_bank.eq(s2.bank), self.rd_row.eq(s2.row)]

        # --- S3: contributions rotated to the word's lines, added, written back, emitted ---
        # The rotation is here, not in front of contrib: after the decoder's deepest lane
        # (its multiplier, shift, rounding adder and output mux) its three-way mux on line 3
        # made 9 levels at 256 bits; here it is in parallel with the banks' read rotation,
        # in front of the adder. Its selects are registers of their own (decoded from
        # s3.shift, `wide` would be a level more).
        s3 = Signal(_beat_stage(p))
        m.d.sync += s3.eq(s2)
        wide = Signal(name="lines_wide", reset_less=True)
        mx = Signal(name="lines_mx", reset_less=True)
        m.d.sync += Cat(wide, mx).eq(Cat(*line_selects(s2.shift)))
        lines = [data.ArrayLayout(signed(32), L)(line)
                 for line in to_lines([c.as_value() for c in contrib], wide, mx)]
        line_sums = []
        # The word read in S2, except for the round's first frame; 0 where S2 read nothing
        # (the banks' rotation moves on, and the sums of an idle port stay still).
        read_s3 = s3.valid & (s3.job.write | s3.job.emit)
        keep_old = read_s3 & ~(s3.job.write & s3.job.replace)
        for j in range(WORD_LINES):
            sums = Signal(data.ArrayLayout(signed(p.acc_width), L), name=f"sum{j}")
            for i in range(L):
                old = self.rd_data.word_select(j * L + i, p.acc_width).as_signed()
                m.d.comb += sums[i].eq(Mux(keep_old, old, 0) + lines[j][i])
            line_sums.append(sums.as_value())
        m.d.comb += [self.wr_en.eq(Mux(s3.valid & s3.job.write, s3.lines, 0)),
                     self.wr_bank.eq(s3.bank), self.wr_row.eq(s3.row),
                     self.wr_data.eq(Cat(*line_sums))]
        # Back to beat order: group g is line first_line + g.
        out_groups = to_beat(line_sums, s3.first_line)
        e = self.emit
        m.d.comb += [e.valid.eq(s3.valid & s3.job.emit), e.beat.eq(s3.beat), e.last.eq(s3.last),
                     e.dtype.eq(s3.job.dtype), e.scale.eq(s3.job.scale), e.count.eq(s3.job.count),
                     e.result.eq(s3.job.result), e.nan.eq(s3.job.nan), e.dest.eq(s3.job.dest),
                     e.entry.eq(s3.job.entry)]
        for g in range(WORD_LINES):
            for i in range(L):
                m.d.comb += e.sums[g * L + i].eq(out_groups[g].word_select(i, p.acc_width))
        return m


class AccumulatorBanks(wiring.Component):
    """`ports` banks of accumulator words (WORD_LINES lines of `lanes` accumulators, a
    write enable per line), each read and written by whichever port's turn it is.

    Which port that is follows from the cycle's `phase` alone: a port's passes start only
    in its phase, so a busy port n reads in S2 at bank (phase + n + READ_BANK) mod ports
    and writes in S3 at (phase + n + WRITE_BANK) (`bank_in_stage`). The ports' requests
    reach the banks, and the banks' words the ports, through a rotation by a
    phase-derived amount: a log rotator of ceil(log2(ports)) two-way muxes per bit, with
    its amounts in registers. A port that is not reading or writing meets a bank all the
    same; its write enables are off, and a read has no side effect. While no port reads,
    the amount holds, so an idle switch's addresses and words stay still (no toggling, and
    an event-driven simulator has nothing to do)."""

    def __init__(self, p: Params):
        self.p = p
        rows = p.slots * 2 * bank_rows(p)
        width = WORD_LINES * p.lanes * p.acc_width
        members = {"phase": In(range(p.ports))}
        for n in range(p.ports):
            members.update({
                f"rd_valid{n}": In(1), f"rd_row{n}": In(range(rows)), f"rd_data{n}": Out(width),
                f"wr_en{n}": In(WORD_LINES), f"wr_row{n}": In(range(rows)),
                f"wr_data{n}": In(width),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        rows = p.slots * 2 * bank_rows(p)
        width = WORD_LINES * p.lanes * p.acc_width
        g = lambda name, n: getattr(self, f"{name}{n}")
        # bank b is read (S2) by port (b - phase - READ_BANK) mod ports
        by_phase = Signal(range(P))
        with m.Switch(self.phase):
            for ph in range(P):
                with m.Case(ph):
                    m.d.comb += by_phase.eq((-ph - READ_BANK) % P)
        amount = Signal(range(P))
        held = Signal(range(P), reset_less=True)
        any_read = Cat(*(g("rd_valid", n) for n in range(P))).any()
        m.d.comb += amount.eq(Mux(any_read, by_phase, held))
        m.d.sync += held.eq(amount)
        # one cycle later the same port is in S3: it writes bank b, and takes bank b's word
        wr_amount = Signal(range(P), reset_less=True)
        rd_back = Signal(range(P), reset_less=True)
        m.d.sync += wr_amount.eq(amount)
        with m.Switch(amount):
            for a in range(P):
                with m.Case(a):
                    m.d.sync += rd_back.eq((-a) % P)
        rd_row = rotate([g("rd_row", n) for n in range(P)], amount)
        wr_row = rotate([g("wr_row", n) for n in range(P)], wr_amount)
        wr_en = rotate([g("wr_en", n) for n in range(P)], wr_amount)
        wr_data = rotate([g("wr_data", n) for n in range(P)], wr_amount)
        # A memory per line of a bank, so that a cell is never read and written in the same
        # cycle where the read is used: a pass reads a line only after the pass before it on
        # the (slot, bank) has written it (RMW_GAP, and the order of rounds), but it may
        # read a word while another pass writes a different line of that word. So each
        # line's memory is marked `no_rw_check`, and Yosys builds no read-during-write
        # bypass (a register on the write data and a mux, per bit).
        line_bits = p.lanes * p.acc_width
        data_out = []
        for b in range(P):
            lines = []
            for j in range(WORD_LINES):
                mem = Memory(shape=line_bits, depth=rows, init=[], attrs={"no_rw_check": True})
                m.submodules[f"bank{b}_line{j}"] = mem
                rp = mem.read_port()
                wp = mem.write_port()
                m.d.comb += [rp.addr.eq(rd_row[b]), wp.addr.eq(wr_row[b]),
                             wp.data.eq(wr_data[b].word_select(j, line_bits)),
                             wp.en.eq(wr_en[b][j])]
                lines.append(rp.data)
            data_out.append(Cat(*lines))
        for n, word in enumerate(rotate(data_out, rd_back)):
            m.d.comb += g("rd_data", n).eq(word)
        return m


def rotate(values, amount):
    """out[i] = values[(i + amount) mod len(values)], amount < len(values): one stage of
    two-way muxes per bit of `amount`."""
    n = len(values)
    for bit in range(len(Value.cast(amount))):
        step = 1 << bit
        values = [Mux(amount[bit], values[(i + step) % n], values[i]) for i in range(n)]
    return values
