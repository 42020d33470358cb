"""tests/groups.py: `pytest -n 2 --dist loadgroup` runs the tests of a group on one worker
(pytest-xdist's own loadgroup scheduling spreads them with pytest 9.2), and node ids stay
as pytest makes them."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TESTS = """
import pytest

@pytest.mark.xdist_group("model-a")
@pytest.mark.parametrize("i", range(4))
def test_a(i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_single(i):
    pass

@pytest.mark.parametrize("i", [pytest.param(0, marks=pytest.mark.xdist_group("model-b")), 1])
def test_b(i):
    pass

@pytest.mark.xdist_group("model-b")
def test_b_too():
    pass
"""


def test_groups_run_on_one_worker(tmp_path):
    (tmp_path / "test_toy.py").write_text(TESTS)
    res = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                          "-p", "tests.groups", "-p", "no:cacheprovider", "test_toy.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "scheduling tests via GroupScheduling" in res.stdout, res.stdout[-3000:]
    ran = dict((name, worker) for worker, name in
               re.findall(r"\[(gw\d)\] \[ *\d+%\] PASSED test_toy.py::(\S+)", res.stdout))
    assert len(ran) == 13, res.stdout[-3000:]
    assert all("@" not in name for name in ran), "node ids must stay pytest's"
    assert len({ran[f"test_a[{i}]"] for i in range(4)}) == 1, ran
    assert ran["test_b[0]"] == ran["test_b_too"], ran
