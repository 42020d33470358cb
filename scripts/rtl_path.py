"""Print the path `make verilog` writes for a parameter set.

No parameter options: rtl/aggswitch.v (the default configuration, committed).
Any parameter option:  rtl/aggswitch_p{ports}_w{data_width}_s{slots}_e{slot_elems}_j{jobs}.v
(git-ignored), the options not given taking their defaults.
"""

import argparse
import sys

from aggswitch.params import Params

FIELDS = ("ports", "data_width", "slots", "slot_elems", "jobs")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in FIELDS:
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=None)
    args = ap.parse_args(argv)
    given = {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}
    try:
        params = Params(**given)
    except ValueError as e:
        ap.error(str(e))
    print(f"rtl/aggswitch_{params.name()}.v" if given else "rtl/aggswitch.v")
    return 0


if __name__ == "__main__":
    sys.exit(main())
