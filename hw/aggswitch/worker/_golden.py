"""The golden model's frame layout and numerics (tb/model/frames.py, tb/model/numerics.py).

They are written from docs/SPEC.md §3/§4 and import only NumPy, so the worker library uses
them as they are instead of a second copy. In a checkout of this repository (where `hw/` is
on sys.path, as with `pip install -e .` or the examples) the repository root is added to
sys.path when `tb` cannot be imported yet.
"""

import sys
from pathlib import Path

try:
    from tb.model import frames, numerics
except ImportError:
    _root = Path(__file__).resolve().parents[3]
    if not (_root / "tb" / "model" / "numerics.py").is_file():
        raise
    sys.path.append(str(_root))
    from tb.model import frames, numerics

__all__ = ["frames", "numerics"]
