"""Verilog export of the top level (`make verilog`).

The output is reproducible byte for byte: no source locations, no absolute paths.
"""

import argparse
import sys
from pathlib import Path

from amaranth.back import verilog

from .params import Params


def generate(params: Params = Params()) -> str:
    from .top import AggSwitch
    top = AggSwitch(params)
    return verilog.convert(top, name="aggswitch", emit_src=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export the aggswitch top level as Verilog")
    ap.add_argument("-o", "--output", type=Path, default=None, help="output file (default stdout)")
    for field in ("ports", "data_width", "slots", "slot_elems", "jobs"):
        ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(Params(), field))
    args = ap.parse_args(argv)
    params = Params(ports=args.ports, data_width=args.data_width, slots=args.slots,
                    slot_elems=args.slot_elems, jobs=args.jobs)
    text = generate(params)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
