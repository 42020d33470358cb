"""Work groups for pytest-xdist: the tests of one simulation model run on one worker.

`make test` and `make regress` run pytest with `-n auto --dist loadgroup`. A Verilator
model takes one to two CPU-minutes to build, under its build directory's file lock
(sim/runner.py). A worker that reaches a test of a model the other worker is still
building waits for that build with nothing to do (32 s of a worker in a `make test`
before these groups). tests/test_rtl.py runs the cases of one build in one simulator
process, a batch (its docstring); a worker that reaches a case of a batch another worker
is running simulates that case again on its own. With a group per model, one worker builds
the model and runs every test of it, while the other runs the rest.

A test joins a group with the standard `pytest.mark.xdist_group` marker (`model(params,
sim)` below). pytest-xdist's own loadgroup scheduling reads the group from a suffix it
writes into each test's node id, which pytest 9.2 no longer takes (pytest-dev/pytest-xdist
issue 1386: the tests are then spread as if they had no marker). So the workers write
each test's group to a file instead (`pytest_collection_modifyitems`, in the directory
the controller hands them in `workerinput`), and `GroupScheduling`, xdist's loadgroup
scheduler with that lookup in place of the suffix, reads the files when every worker has
collected. Node ids stay as pytest makes them.

xdist's scheduler hands out its units of work (a group, or a single test) largest first,
so the groups start first and the single tests that follow balance the end of the run.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

INPUT_KEY = "aggswitch_groups_dir"


def model(params, sim: str = "verilator") -> pytest.MarkDecorator:
    """The group of the tests that simulate `params` on `sim` (one build: with waves or
    without, tests/conftest.py)."""
    return pytest.mark.xdist_group(f"{sim}-{params.name()}")


def group_of(item) -> str | None:
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    return "_".join(names) or None


# --- the controller -----------------------------------------------------------------
def _scheduler_class():
    from xdist.scheduler.loadscope import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's loadgroup scheduling, with each test's group from the workers' files."""

        def __init__(self, config, log=None):
            super().__init__(config, log)
            self.groups_dir = Path(config._aggswitch_groups_dir)
            self._groups = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                self._groups = {}
                for f in sorted(self.groups_dir.glob("*.json")):
                    self._groups.update(json.loads(f.read_text()))
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if not hasattr(config, "_aggswitch_groups_dir"):
        config._aggswitch_groups_dir = tempfile.mkdtemp(prefix="aggswitch-groups-")
    node.workerinput[INPUT_KEY] = config._aggswitch_groups_dir


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup" and hasattr(config, "_aggswitch_groups_dir"):
        return _scheduler_class()(config, log)
    return None


def pytest_unconfigure(config):
    d = getattr(config, "_aggswitch_groups_dir", None)
    if d:
        shutil.rmtree(d, ignore_errors=True)


# --- a worker -----------------------------------------------------------------------
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    d = getattr(config, "workerinput", {}).get(INPUT_KEY)
    if d:
        groups = {item.nodeid: g for item in items if (g := group_of(item))}
        worker = config.workerinput.get("workerid", str(os.getpid()))
        (Path(d) / f"{worker}.json").write_text(json.dumps(groups))
