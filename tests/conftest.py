"""Session-wide settings of the regression (`make test`, `make regress`)."""

import os

from aggswitch.params import Params
from sim.runner import TRACEABLE_ENV

# The small parameter set of tests/test_rtl.py runs on Verilator with and without waves
# (tests/test_waves.py; tests/test_rtl.py, test_pcap.py, test_uvm.py, test_serve.py,
# test_ddp.py): every run uses its model built for waves, so the session builds it once
# (sim/runner.py, `traceable`). Set in the environment, it reaches the simulators'
# processes and the ones `make serve` and `make train` start under the tests too.
# An AGGSWITCH_TRACEABLE already set (even empty) is kept.
SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
os.environ.setdefault(TRACEABLE_ENV, SMALL.name())

# pytest-xdist work groups: the tests of one simulation model on one worker (tests/groups.py)
from tests.groups import (pytest_collection_modifyitems, pytest_configure_node,  # noqa: E402,F401
                          pytest_unconfigure, pytest_xdist_make_scheduler)
