"""Pass schedule arithmetic (docs/engine-v2.md).

A pass of port p may start only in a cycle whose *phase* (cycle number mod `ports`, kept
by a counter) is `start_phase(p)`: then line k of every pass is handled when port p's
turn is at accumulator bank k mod ports, and no two ports ever meet in a bank. Times are
kept as (period, phase): cycle = period * ports + phase, the period a 32-bit counter that
wraps like the cycle counter, compared modulo 2**32 (a window of 2**31 periods).

Everything here builds logic from signals; the divisions by `ports` are tables built in
Python over the small range of values they see.
"""

from amaranth import *
from amaranth.lib import data

__all__ = ["HORIZON_BITS", "period_time", "start_phase", "not_before", "later", "advance",
           "first_period", "start_after", "first_offset", "latest"]

# A constraint on a pass's start is at most this many periods ahead of the earliest start
# the decision could give it (a few queued jobs' worth); one further ahead is a stamp from
# 2**32 periods ago seen modulo 2**32, and is ignored.
HORIZON_BITS = 16


def period_time(ports):
    return data.StructLayout({"e": 32, "r": range(ports)})


def start_phase(port, ports):
    """The phase in which port `port` starts its passes (so that line 0 meets bank 0)."""
    return (-port) % ports


def not_before(a, b):
    """Period a is at or after period b (modulo 2**32)."""
    return ~(a - b)[31]


def later(a, b):
    """The later of periods a and b."""
    return Mux(not_before(a, b), a, b)


def advance(e, r, n, n_max, ports):
    """(period, phase) of the cycle `n` cycles after (e, r), for 0 <= n <= n_max."""
    s = r + n
    span = ports + n_max
    carry = Array(C(x // ports, range(span // ports + 1)) for x in range(span))[s]
    phase = Array(C(x % ports, range(ports)) for x in range(span))[s]
    return (e + carry)[:32], phase


def first_period(e, r, phase):
    """The first period whose cycle of phase `phase` is at or after the cycle (e, r)."""
    return (e + (phase < r))[:32]


def start_after(base, constraints, bits=HORIZON_BITS):
    """The period of a pass's start: `base` (the earliest the decision can give it), or
    later to honour each (valid, period) of `constraints` that lies less than 2**bits
    periods after `base`. Constraints before `base` (or implausibly far after it) do not
    delay it."""
    best = C(0, bits)
    for valid, c in constraints:
        d = (c - base)[:32]
        ahead = Mux(valid & (d[bits:] == 0), d[:bits], 0)
        best = Mux(ahead > best, ahead, best)
    return (base + best)[:32]


def first_offset(x, phase, ports, x_max, n=None, plus=0):
    """The first period whose cycle of phase `phase` is at or after cycle x + n + plus of
    period 0 (x, n small signals, plus a constant, the sum at most x_max): the sum's
    quotient and remainder by `ports`, bit slices of an adder for a power of two, else a
    table on x and n (no adder before it). A constraint kept as
    (start period e, cycles x from the start of period e) is then e + first_offset(x, ...)
    = first_period(*advance(e, 0, x, ...), phase)."""
    if n is None:
        n = C(0, 0)
    out_width = len(Signal(range(x_max // ports + 2)))
    if ports & (ports - 1) == 0:
        # A power of two: the period is ceil((x + n + plus - phase) / ports), the sum's
        # bits above the phase bits once ports - 1 is added (callers keep the sum within
        # x_max, where this agrees with the table below). The small terms are summed in
        # a table on x and the phase when both are a few bits, so a single carry chain
        # (adding n) stands between the registers and the result.
        k = ports.bit_length() - 1
        lift = plus + ports - 1
        x, phase = Value.cast(x), Value.cast(phase)
        if len(x) + len(phase) <= 6:
            small = Array(C(xv + lift - ph, range(2 ** len(x) + lift + 1))
                          for xv in range(2 ** len(x)) for ph in range(2 ** len(phase)))
            small = small[Cat(phase, x)]
        else:
            small = (x + lift - phase)[:len(x) + lift.bit_length() + 1]
        return ((n + small) >> k)[:out_width]
    w = len(n)
    sums = [min((i & ((1 << w) - 1)) + (i >> w) + plus, x_max) for i in range(1 << (w + len(x)))]
    idx = Cat(n, x)
    q = Array(C(v // ports, range(x_max // ports + 1)) for v in sums)[idx]
    r = Array(C(v % ports, range(ports)) for v in sums)[idx]
    return (q + (phase < r))[:out_width]


def latest(candidates):
    """The latest period of [(valid, period)] (0 if none is valid): every pair compared
    at once (not_before, one subtraction each), then a one-hot AND-OR select, so the depth
    does not grow with the number of candidates the way a chain of later() does. The
    valid periods must lie within 2**31 of each other (start_after()'s horizon keeps them
    so)."""
    out = 0
    for i, (ok_i, v_i) in enumerate(candidates):
        win = ok_i
        for j, (ok_j, v_j) in enumerate(candidates):
            if j != i:
                win = win & (~ok_j | not_before(v_i, v_j))
        out = out | Mux(win, v_i, 0)
    return out
