"""Result buffer: every RESULT payload encoded once, read by each of its destinations at
its own pace (docs/engine-v2.md, "Result path").

A completing (or resending) pass writes its encoded beats into an *entry* of this buffer,
whatever its destinations are doing; each destination port then reads the entries
referenced to it, in decision order, into its egress payload FIFO. The multicast costs
one write, and an entry is free again once its last destination has read it.

Banks and rotation. The buffer is `ports` banks of `data_width`-bit words (block RAM,
one write and one read port each). Beat j of an entry lives in bank j mod ports, at row
`entry * entry_rows + j div ports`. Writers: the emitter of port s hands over beat j in a
cycle that the pass schedule fixes (its passes start in phase start_phase(s) and never
stall), so writer s is at bank (t + s + c) mod ports in cycle t for a constant c: two
writers are never in one bank in a cycle, and no writer ever waits. Readers: destination
d may read bank (t + d) mod ports in cycle t, and only that one, so two readers are
never in one bank either. A reader takes its entry's beats in order, one per cycle, as
its turn walks along the banks; when its egress FIFO is full it waits for the next turn
at the bank of its next beat (at most ports - 1 cycles).

Entries. The decision stage allocates an entry for each RESULT it hands over
(`alloc_*`: at most one per cycle, when `alloc_ok`) and every destination gets a
reference to it in its reference queue. A destination holds at most RESULT_QUOTA
references queued at its egress (its `room`) plus the one it is reading; there are
2 * RESULT_QUOTA + ports entries, so a destination that stops reading leaves the others
at least RESULT_QUOTA - 1, and a multicast takes one entry for all its destinations. An
entry's `written` flag is set by its writer's last beat (with OVERFLOW); a reader starts
an entry only once it is written, so it never overtakes the writer, and it frees its
reference as it reads the last beat, so an entry is never rewritten before every
destination has read it.

Each destination's output is a beat stream (`data`, `data_en`) and a RESULT's done record
(`done_en`, `done_overflow`, `done_scales`): with its first beat, or, for MX, with its
last, since the scale line is gathered from side bits of the words (each MX beat's block
scales; at data_width 128, where a block spans two beats, the block's first beat carries its
scale and the second 0). The egress starts a RESULT only once its done record is in, and the reader then
keeps ahead of the MAC (`egress_beats` credits, docs/ARCHITECTURE.md).
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory

from .params import Params
from .codec import block_parts

__all__ = ["RESULT_QUOTA", "result_entries", "entry_rows", "side_bits", "result_write", "ResultBuffer",
           "ResultBanks"]

# RESULTs a destination may have queued at its egress (decided, not yet started).
RESULT_QUOTA = 32


def result_entries(p: Params):
    """Entries of the result buffer: twice a destination's quota and one per port (even).
    A multicast takes one entry for all its destinations, so one job's bursts need about
    the quota; a destination that stops reading holds at most its quota and the entry
    it reads, and the others keep at least RESULT_QUOTA - 1."""
    n = 2 * RESULT_QUOTA + p.ports
    return n + n % 2


def side_bits(p: Params):
    """Side-band bits of a buffer word: an MX beat's block scales (one byte per block)."""
    return 8 * block_parts(p)[0] if p.mx_ok else 0


def entry_rows(p: Params):
    """Rows of one entry in each bank (a power of two: the row is the entry's index and
    the beat's row within the entry side by side)."""
    per_bank = -(-p.slot_lines // p.ports)
    return 1 << (per_bank - 1).bit_length()


def result_write(p: Params):
    """One encoded RESULT beat from a port's emitter, registered."""
    return data.StructLayout({
        "valid": 1,
        "entry": range(result_entries(p)),
        "beat": range(p.slot_lines),
        "data": p.data_width,
        # the cycle before the last beat: the entry is complete after the next cycle
        "finish": 1,
        "finish_entry": range(result_entries(p)),
        "side": side_bits(p),          # an MX beat: the scales of its blocks
        # with the last beat: OVERFLOW of the whole RESULT
        "last": 1,
        "overflow": 1,
    })


def _div_mod(value, n, limit):
    """(value div n, value mod n) for 0 <= value < limit, as wiring when n is a power of
    two and as small tables otherwise."""
    if n & (n - 1) == 0:
        k = n.bit_length() - 1
        return value >> k, value[:k] if k else C(0, 1)
    div = Array(C(i // n, max(1, ((limit - 1) // n).bit_length())) for i in range(limit))
    mod = Array(C(i % n, max(1, (n - 1).bit_length())) for i in range(limit))
    return div[value], mod[value]


class ResultBuffer(wiring.Component):
    def __init__(self, p: Params):
        self.p = p
        N = result_entries(p)
        members = {
            "alloc_en": In(1), "alloc_dest": In(p.ports), "alloc_beats": In(range(p.slot_lines + 1)),
            "alloc_mx": In(1),
            "alloc_entry": Out(range(N)), "alloc_ok": Out(1),
            "pop": In(p.ports),                       # a payload beat left destination d's FIFO
            "data": Out(p.data_width).array(p.ports), "data_en": Out(p.ports),
            "done_en": Out(p.ports), "done_overflow": Out(p.ports),
            "done_scales": Out(8 * p.mx_blocks).array(p.ports),
            "in_use": Out(N),                         # entries referenced (for tests)
        }
        for s in range(p.ports):
            members[f"w{s}"] = In(result_write(p))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        N = result_entries(p)
        R = entry_rows(p)
        L = p.slot_lines
        F = p.egress_beats
        SB = side_bits(p)
        writers = [getattr(self, f"w{s}") for s in range(P)]

        # --- entry state --------------------------------------------------------------
        pending = [Signal(P, name=f"pending{e}") for e in range(N)]    # destinations to read it
        written = Signal(N)
        overflow = Signal(N)
        free = Signal(N)
        m.d.comb += [free.eq(Cat(*[pd == 0 for pd in pending])), self.in_use.eq(~free)]

        # --- allocation -----------------------------------------------------------------
        # Two candidates, registered: the lowest free even entry and the lowest free odd
        # one. An entry allocated in one cycle is still free in the candidates of the next
        # (they were found before it was taken), so the parities take turns: every
        # allocation switches to the other one, and the entries a stalled port holds are
        # half of each. `alloc_ok` asks for both: it is on COMMIT's path, so it is one AND
        # of two registers.
        # Each candidate is registered one-hot too, so that taking entry e is one LUT of
        # alloc_en, not a compare of the selected index behind COMMIT's decision.
        cand = [Signal(range(N), name=f"cand{k}") for k in range(2)]
        cand_oh = [Signal(N // 2, name=f"cand{k}_oh") for k in range(2)]
        cand_ok = Signal(2)
        for k in range(2):
            ok_k, idx_k = _lowest(m, [free[e] for e in range(k, N, 2)], f"cand{k}")
            m.d.sync += [cand[k].eq(Cat(C(k, 1), idx_k)), cand_ok[k].eq(ok_k),
                         cand_oh[k].eq(Cat(*[idx_k == j for j in range(N // 2)]))]
        use_odd = Signal()                         # the odd candidate's turn
        m.d.sync += use_odd.eq(use_odd ^ self.alloc_en)
        m.d.comb += [self.alloc_entry.eq(Mux(use_odd, cand[1], cand[0])),
                     self.alloc_ok.eq(cand_ok.all())]
        # (taking the entry: at the end of elaborate)

        # --- writers ------------------------------------------------------------------
        rbits = (R - 1).bit_length()
        wr_bank, wr_row = [], []
        for s, w in enumerate(writers):
            row_in, bank = _div_mod(w.beat, P, L)
            w_bank = Signal(range(P), name=f"wr_bank{s}")
            w_row = Signal(range(N * R), name=f"wr_row{s}")
            # the row within the entry (zero-extended to rbits), then the entry
            m.d.comb += [w_bank.eq(bank),
                         w_row.eq(Cat(Cat(row_in, C(0, rbits))[:rbits], w.entry) if rbits else w.entry)]
            wr_bank.append(w_bank)
            wr_row.append(w_row)
            for e in range(N):
                with m.If(w.finish & (w.finish_entry == e)):
                    m.d.sync += written[e].eq(1)
                with m.If(w.valid & w.last & (w.entry == e)):
                    m.d.sync += overflow[e].eq(w.overflow)

        # --- readers (declared here, driven below) -----------------------------------------
        rd_issue = [Signal(name=f"rd_issue{d}") for d in range(P)]
        rd_bank = [Signal(range(P), name=f"rd_bank{d}") for d in range(P)]
        rd_row = [Signal(range(N * R), name=f"rd_row{d}") for d in range(P)]

        # --- banks: each takes the writer and the reader whose turn it is ----------------
        m.submodules.banks = banks = ResultBanks(p)
        bank_data = []
        for b in range(P):
            wsel = [w.valid & (wr_bank[s] == b) for s, w in enumerate(writers)]
            rsel = [rd_issue[d] & (rd_bank[d] == b) for d in range(P)]
            m.d.comb += [
                banks.wr_en[b].eq(Cat(*wsel).any()),
                banks.wr_row[b].eq(_or_all([Mux(wsel[s], wr_row[s], 0) for s in range(P)])),
                banks.wr_data[b].eq(_or_all([Mux(wsel[s], Cat(writers[s].data, writers[s].side), 0)
                                             for s in range(P)])),
                banks.rd_row[b].eq(_or_all([Mux(rsel[d], rd_row[d], 0) for d in range(P)])),
            ]
            bank_data.append(banks.rd_data[b])

        ref_layout = data.StructLayout({"entry": range(N), "beats": range(L + 1), "mx": 1})
        # The references are registered on their way into the queues (COMMIT's decision
        # ends in alloc_en): a queue sees them a cycle later, long before their entries
        # are written.
        push = Signal(P)
        push_ref = Signal(ref_layout)
        m.d.sync += [push.eq(Mux(self.alloc_en, self.alloc_dest, 0)),
                     push_ref.eq(Cat(self.alloc_entry, self.alloc_beats, self.alloc_mx))]
        for d in range(P):
            refs = SyncFIFOBuffered(width=ref_layout.size, depth=RESULT_QUOTA + 1)
            m.submodules[f"refs{d}"] = refs
            m.d.comb += [refs.w_data.eq(push_ref), refs.w_en.eq(push[d])]
            head = ref_layout(refs.r_data)

            # The reference at the head is ready once its entry is written (registered:
            # not for the cycle after a pop, when the head has just changed).
            head_ready = Signal(name=f"head_ready{d}")
            load = Signal(name=f"load{d}")
            m.d.sync += head_ready.eq(refs.r_rdy & ~load & Array(written)[head.entry])

            active = Signal(name=f"active{d}")
            entry = Signal(range(N), name=f"entry{d}")
            beats = Signal(range(L + 1), name=f"beats{d}")
            mx = Signal(name=f"mx{d}")
            j = Signal(range(L), name=f"j{d}")
            j_row = Signal(max(1, rbits), name=f"j_row{d}")
            j_bank = Signal(range(P), name=f"j_bank{d}")
            # the reader's turn: bank (t + d) mod ports in cycle t
            my_bank = Signal(range(P), init=d % P, name=f"my_bank{d}")
            m.d.sync += my_bank.eq(Mux(my_bank == P - 1, 0, my_bank + 1))
            credits = Signal(range(F + 1), init=F, name=f"credits{d}")
            credit_ok = Signal(init=1, name=f"credit_ok{d}")
            last = j == beats - 1
            issue = rd_issue[d]
            m.d.comb += [issue.eq(active & credit_ok & (j_bank == my_bank)),
                         rd_bank[d].eq(j_bank),
                         rd_row[d].eq(Cat(j_row[:rbits], entry) if rbits else entry)]
            m.d.comb += load.eq(head_ready & (~active | (issue & last)))
            m.d.comb += refs.r_en.eq(load)
            with m.If(issue):
                m.d.sync += [j.eq(j + 1), j_bank.eq(Mux(j_bank == P - 1, 0, j_bank + 1))]
                with m.If(j_bank == P - 1):
                    m.d.sync += j_row.eq(j_row + 1)
                with m.If(last):
                    m.d.sync += active.eq(0)
                    # the last beat is read: this destination is done with the entry
                    for e in range(N):
                        with m.If(entry == e):
                            m.d.sync += pending[e][d].eq(0)
            with m.If(load):
                m.d.sync += [active.eq(1), entry.eq(head.entry), beats.eq(head.beats), mx.eq(head.mx),
                             j.eq(0), j_row.eq(0), j_bank.eq(0)]
            credits_next = Signal(range(F + 1), name=f"credits_next{d}")
            m.d.comb += credits_next.eq(credits - issue + self.pop[d])
            m.d.sync += [credits.eq(credits_next), credit_ok.eq(credits_next != 0)]

            # The read: data from the bank one cycle later. The done record goes with the
            # first beat of a RESULT, or with the last of an MX one: its scale line is
            # gathered from the side bits of its beats (the element beats are all in the
            # FIFO before the deparser starts it).
            q_en = Signal(name=f"q_en{d}")
            q_first = Signal(name=f"q_first{d}")
            q_last = Signal(name=f"q_last{d}")
            q_mx = Signal(name=f"q_mx{d}")
            q_j = Signal(range(L), name=f"q_j{d}")
            q_bank = Signal(range(P), name=f"q_bank{d}")
            q_ovf = Signal(name=f"q_overflow{d}")
            m.d.sync += [q_en.eq(issue), q_first.eq(issue & (j == 0)), q_last.eq(issue & last),
                         q_mx.eq(mx), q_j.eq(j), q_bank.eq(j_bank),
                         q_ovf.eq(Array(overflow)[entry])]
            word = Array(bank_data)[q_bank]
            m.d.comb += [self.data[d].eq(word[:p.data_width]), self.data_en[d].eq(q_en),
                         self.done_en[d].eq(Mux(q_mx, q_last, q_first)), self.done_overflow[d].eq(q_ovf)]
            if SB:
                per = 8 * p.mx_blocks // SB + (1 if (8 * p.mx_blocks) % SB else 0)
                line = Signal(per * SB, name=f"scale_line{d}")   # the beats before this one
                here = Signal(per * SB, name=f"scale_here{d}")   # this beat's, in place
                m.d.comb += here.eq(0)
                # a block's scales are the side bits of its first beat (those of a block's
                # later beats, at data_width 128, are 0): block b of beat j is j >> per_block
                per_block = (p.block_beats - 1).bit_length()
                with m.If(q_en & q_mx):
                    m.d.comb += here.word_select(q_j >> per_block, SB).eq(word[p.data_width:])
                with m.If(q_en):
                    m.d.sync += line.eq(Mux(q_first, 0, line) | here)
                m.d.comb += self.done_scales[d].eq((Mux(q_first, 0, line) | here)[:8 * p.mx_blocks])

        # --- taking the allocated entry -------------------------------------------------
        # Last, so that it takes priority: alloc_en, the end of COMMIT's decision, is then
        # the select of the last mux into `pending` and `written`, and the readers' and
        # writers' updates of the entry come before it. They never coincide with it: the
        # entry was free (no destination reading it, its writing long finished).
        for e in range(N):
            with m.If(self.alloc_en & (use_odd == e % 2) & cand_oh[e % 2][e // 2]):
                m.d.sync += [pending[e].eq(self.alloc_dest), written[e].eq(0)]
        return m


def _lowest(m, bits, name):
    """(any, index) of the lowest set bit of `bits`, by a tree of 2:1 selections."""
    if len(bits) == 1:
        return bits[0], C(0, 0)
    half = 1 << ((len(bits) - 1).bit_length() - 1)      # a power of two, len - half <= half
    k = half.bit_length() - 1
    any_l, idx_l = _lowest(m, bits[:half], name + "l")
    any_r, idx_r = _lowest(m, bits[half:], name + "r")
    idx = Signal(range(len(bits)), name=f"{name}_idx")
    # an index in the upper half is half + idx_r: idx_r < half, so bit k set
    m.d.comb += idx.eq(Mux(any_l, idx_l, Cat(idx_r, C(0, k - len(idx_r)), C(1, 1))))
    return any_l | any_r, idx


class ResultBanks(wiring.Component):
    """The buffer's `ports` block RAMs, one write and one (synchronous) read port each.
    A separate block so that the proofs of the engine's control can cut the data."""

    def __init__(self, p: Params):
        self.p = p
        rows = result_entries(p) * entry_rows(p)
        super().__init__({
            "wr_en": In(1).array(p.ports), "wr_row": In(range(rows)).array(p.ports),
            "wr_data": In(p.data_width + side_bits(p)).array(p.ports),
            "rd_row": In(range(rows)).array(p.ports),
            "rd_data": Out(p.data_width + side_bits(p)).array(p.ports),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        rows = result_entries(p) * entry_rows(p)
        for b in range(p.ports):
            mem = Memory(shape=p.data_width + side_bits(p), depth=rows, init=[])
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.en.eq(self.wr_en[b]), wp.addr.eq(self.wr_row[b]),
                         wp.data.eq(self.wr_data[b]), rp.addr.eq(self.rd_row[b]),
                         self.rd_data[b].eq(rp.data)]
        return m


def _or_all(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
