"""Print a SymbiYosys counterexample or cover trace as a table: one row per step, one column
per signal whose name matches one of the patterns (regular expressions).

    python -m tb.formal.trace build/formal/axil/axil/engine_0/trace.vcd 'dut\\.(b|r)' ...
"""

import argparse
import re
import sys

from vcd.reader import TokenKind, tokenize


def read(path):
    """{full signal name: {time: value string}}, and the list of times."""
    ids, values, times = {}, {}, []
    scope = []
    now = 0
    with open(path, "rb") as f:
        for tok in tokenize(f):
            if tok.kind is TokenKind.SCOPE:
                scope.append(tok.scope.ident)
            elif tok.kind is TokenKind.UPSCOPE:
                scope.pop()
            elif tok.kind is TokenKind.VAR:
                name = ".".join(scope[1:] + [tok.var.reference])
                ids.setdefault(tok.var.id_code, []).append(name)
            elif tok.kind is TokenKind.CHANGE_TIME:
                now = tok.time_change
                if not times or times[-1] != now:
                    times.append(now)
            elif tok.kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR):
                v = tok.data.value
                for name in ids.get(tok.data.id_code, ()):
                    values.setdefault(name, {})[now] = v
    return values, times


def table(path, patterns, clock_period=None):
    values, times = read(path)
    names = sorted(n for n in values if any(re.search(p, n) for p in patterns))
    # one row per clock step: the times at which the clock rises (or every time)
    clk = values.get("clk") or values.get("top.clk")
    steps = [t for t in times if clk is None or str(clk.get(t, "")) == "1"] or times
    rows = []
    for t in steps:
        row = []
        for n in names:
            hist = values[n]
            v = None
            for tt in sorted(hist):
                if tt <= t:
                    v = hist[tt]
            row.append("-" if v is None else (hex(v) if isinstance(v, int) and v > 9 else str(v)))
        rows.append(row)
    return names, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vcd")
    ap.add_argument("patterns", nargs="+")
    args = ap.parse_args(argv)
    names, rows = table(args.vcd, args.patterns)
    for i, n in enumerate(names):
        print(f"  [{i}] {n}")
    print("step " + " ".join(f"[{i}]".rjust(10) for i in range(len(names))))
    for k, row in enumerate(rows):
        print(f"{k:4d} " + " ".join(v.rjust(10) for v in row))


if __name__ == "__main__":
    sys.exit(main())
