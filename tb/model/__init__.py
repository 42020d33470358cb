"""Bit-exact golden model of the aggswitch aggregation switch.

Written from docs/SPEC.md only, independently of the RTL:

* :mod:`tb.model.frames`   -- frame layout (SPEC section 3), builders and parser;
* :mod:`tb.model.numerics` -- dtype conversions (SPEC section 4);
* :mod:`tb.model.switch`   -- admission (section 10.2), aggregation (section 5),
  RESULT frames (sections 6 and 10.5) and counters (section 8).
"""

from . import frames, numerics, switch  # noqa: F401
from .frames import AggHeader, ParsedFrame, build_frame, data_frame, parse_frame  # noqa: F401
from .switch import Counters, Job, Outcome, SwitchModel  # noqa: F401
