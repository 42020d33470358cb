"""The pyuvm environment's coverage model and report (tb/uvm/covreport.py,
tb/uvm/coverage.py) without a simulator: bins this build cannot reach are reported as such
with their reason, a hit on one is an error, and the regression's merge adds hits up."""

import yaml

from cocotb_coverage.coverage import coverage_db

from tb.uvm import covreport
from tb.uvm.coverage import build_samplers

INT32_ONLY = {"params": "p4", "ports": 4, "workers": 4, "supported": ["int32"],
              "used": ["int32"], "noise_cases": ["runt", "bad checksum"]}


def sample_some(meta, dtype="int32"):
    s = build_samplers(meta)
    s["data"]({"dtype": dtype, "hdr_dtype": dtype, "outcome": "complete", "bank": "1",
               "position": "3", "ingress_bp": "free", "origin": "first", "port": "p2",
               "count": "full"})
    s["data"]({"hdr_dtype": "fp32", "outcome": "malformed", "ingress_bp": "stalled",
               "origin": "noise", "port": "p0", "bank": "0"})
    s["noise"]({"case": "runt"})


def export(tmp_path, name="c.yml"):
    f = tmp_path / name
    coverage_db.export_to_yaml(str(f))
    return f


def test_unreachable_dtypes_reported_with_reason(tmp_path):
    sample_some(INT32_ONLY)
    db = yaml.safe_load(export(tmp_path).read_text())
    text, s = covreport.render(covreport.load_hits(db), INT32_ONLY, "t")
    assert s["hit_unreachable"] == 0 and s["hit"] >= 10
    marks = covreport.classify(INT32_ONLY)
    reason = marks["aggswitch.data.dtype"]["fp32"]
    assert marks["aggswitch.data.dtype"]["fp32"][0] == "unreachable" and "MALFORMED" in reason[1]
    # a dropped frame of an unsupported dtype is reachable (and was hit), its rounds are not
    dx = marks["aggswitch.data.dtype_x_outcome"]
    assert ("fp32", "malformed") not in dx and dx[("fp32", "complete")][0] == "unreachable"
    assert marks["aggswitch.result.dtype_x_nan"][("int32", "yes")][0] == "unreachable"
    assert "unreachable in this build" in text and "fp32" in text
    assert "data.outcome: resend" in text     # listed among the bins not hit


def test_hit_on_unreachable_bin_is_an_error(tmp_path):
    sample_some(INT32_ONLY, dtype="bf16")      # an admitted BF16 round in an INT32 build
    db = yaml.safe_load(export(tmp_path).read_text())
    text, s = covreport.render(covreport.load_hits(db), INT32_ONLY, "t")
    assert s["hit_unreachable"] > 0 and "ERROR" in text
    assert any("data.dtype: bf16" in b for b in s["hit_unreachable_list"])


def test_all_dtypes_build_and_excluded_by_knobs():
    meta = dict(INT32_ONLY, supported=list(covreport.DTYPES), used=["int32", "fp32"])
    marks = covreport.classify(meta)
    assert marks["aggswitch.data.dtype"]["bf16"][0] == "excluded"
    assert "fp32" not in marks["aggswitch.data.dtype"]
    assert "aggswitch.mismatch.kind" not in marks       # dtype mismatches are reachable
    two = dict(meta, workers=2, ports=2)
    assert covreport.classify(two)["aggswitch.data.outcome"]["join"][0] == "unreachable"


def test_merge_adds_hits(tmp_path):
    sample_some(INT32_ONLY)
    a = export(tmp_path, "a.yml")
    sample_some(INT32_ONLY)
    b = export(tmp_path, "b.yml")
    db = covreport.merge_files([a, b], tmp_path / "m.yml")
    hits = covreport.load_hits(db)
    assert hits["aggswitch.data.outcome"]["complete"] == 2
    assert hits["aggswitch.data.dtype_x_outcome"][("int32", "complete")] == 2
    meta = covreport.merge_meta([dict(INT32_ONLY, seeds=[1]), dict(INT32_ONLY, seeds=[2])])
    assert meta["seeds"] == [1, 2]
