"""Formal proofs of aggswitch (`make formal`): SymbiYosys on Amaranth harnesses.

One module per proof unit; `python -m tb.formal` runs them and prints a table.
"""
