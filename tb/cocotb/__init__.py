"""cocotb testbenches of the exported `aggswitch` Verilog.

* :mod:`tb.cocotb.harness`       -- the `TB` class: clock, reset, AXI4-Stream sources and
  sinks, cycle-accurate monitors and the scoreboard against the golden model (tb/model);
* :mod:`tb.cocotb.test_switch`   -- the functional regression (run by tests/test_rtl.py);
* :mod:`tb.cocotb.test_allreduce` -- the `make sim` AllReduce scenario (sim/allreduce.py).

Run through sim/runner.py, which builds the Verilog and passes the parameter set in
AGGSWITCH_* environment variables.
"""
