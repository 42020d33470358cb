"""The formal proofs' quick subset (`make formal` runs them all, tb/formal/).

- The quick property sets (the bus protocols, proven by k-induction in seconds) pass.
- A deliberate bug makes its proof fail: the proofs can fail.
- Every mutant still applies to the design (its anchor text is found exactly once), so
  `make formal --mutants` tests what docs/testplan.md says it tests.
"""

import shutil
import sys
from pathlib import Path

import pytest

from tb.formal import common, mutants
from tb.formal.__main__ import all_proofs, harness_for_mutant

needs_sby = pytest.mark.skipif(not (Path(sys.executable).parent / "yowasp-sby").exists(),
                               reason="the formal extra is not installed (make venv installs it)")


@needs_sby
@pytest.mark.parametrize("name", [p.name for p in all_proofs() if p.quick])
def test_quick_proof_passes(name, tmp_path):
    proof = {p.name: p for p in all_proofs()}[name]
    result = common.run(proof, out_dir=tmp_path / name)
    assert result.status == "PASS", f"{name}: {result.status} {result.detail} (log {result.log})"


@needs_sby
def test_mutant_fails_its_proof(tmp_path):
    mutant = {mu.name: mu for mu in mutants.MUTANTS}["axil_b_drop"]
    proof, harness = harness_for_mutant(mutant, mutants.load(mutant))
    result = common.run(proof, harness=harness, out_dir=tmp_path / mutant.name)
    assert result.status == "FAIL", f"the mutant {mutant.name} was not caught: {result.status}"
    assert "axil.py" in result.detail


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda mu: mu.name)
def test_mutant_applies(mutant):
    module = mutants.load(mutant)
    assert module.__name__.startswith("aggswitch._mutant_")
    assert mutant.proof in {p.name for p in all_proofs()}
