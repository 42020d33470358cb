"""`python scripts/verilog_dedupe.py IN.v OUT.v`: IN.v with every other copy of a module
defined as a wrapper of its first definition (`make timing --dedupe`). The code is
hw/aggswitch/dedupe.py, which the export also uses (in its shared form)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hw"))
from aggswitch.dedupe import WRAPPED, dedupe, main, parse  # noqa: E402

__all__ = ["WRAPPED", "dedupe", "main", "parse"]

if __name__ == "__main__":
    main()
