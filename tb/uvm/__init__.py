"""pyuvm verification environment of the `aggswitch` switch.

    test (tb/uvm/test_uvm.py) -> AggSwitchEnv (env.py)
        PortAgent[p] (agent.py): PortSequencer, PortDriver (DATA loss injection, cocotbext-axi
            source through the harness), PortMonitor (ingress and egress transactions from the
            harness' cycle-stamped monitor), ResultChannel (RESULT loss injection on the way
            to the host)
        Scoreboard (scoreboard.py): every RESULT against the golden model, fed through
            uvm_tlm_analysis_fifo
        CoverageCollector (coverage.py): cocotb-coverage model; report in covreport.py
        TranscriptWriter (env.py): cycle-stamped transcript of every frame
    sequences.py: WorkerSequence (one SwitchML host per port, host.py), NoiseSequence
        (frames every admission rule drops), AllReduceSequence (virtual sequence)

The harness of tb/cocotb/harness.py provides the clock, reset, the AXI4-Stream sources and
sinks, the monitor and the golden model (tb/model); the environment adds the host model,
loss injection, the protocol-level checks, coverage and the transcripts. Knobs come from
the ConfigDB (config.py). docs/testplan.md maps the specification to these checks.
"""
