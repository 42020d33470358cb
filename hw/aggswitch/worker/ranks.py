"""DDP rank processes that end, whatever happens: bounded waits, a log per rank, stacks on
demand, and a process-group teardown that cannot deadlock.

The examples (examples/ddp_compare.py for `make train`, examples/ddp_train.py) start their
ranks with :func:`spawn`; each rank calls :func:`rank_output` first and
:func:`destroy_process_group` last:

* :func:`rank_output` sends the rank's output, Python's and the C++ libraries' alike
  (file descriptors 1 and 2), to its own log ``<log_dir>/rank<r>.log``, and makes the rank
  write every thread's Python stack there on SIGUSR1 (faulthandler: its handler needs
  no GIL, so a rank deadlocked in C++ answers too). A rank writes at least a line per step.
* :func:`spawn` waits for the ranks with a bound. When a rank fails, torch ends the others;
  when a live rank's log has not grown for `stall` seconds, every live rank is asked for
  its stacks and killed. Either way :class:`RanksFailed` carries the end of every rank's
  log.
* :func:`destroy_process_group` ends the gloo process group in the order in which PyTorch
  1.13 cannot deadlock (see there).

Importing this module needs neither torch nor NumPy: sim/train.py, in the project's venv,
watches the same logs with :func:`log_sizes` and reports them with :func:`tails`.
"""

from __future__ import annotations

import os
import signal
import sys
import time


class RanksFailed(RuntimeError):
    """A rank failed or stalled; the message ends with every rank's log (see :func:`tails`)."""


def rank_log(log_dir, rank: int) -> str:
    return os.path.join(str(log_dir), f"rank{rank}.log")


def log_sizes(log_dir, nprocs: int) -> list:
    """Bytes in each rank's log (-1 while it does not exist)."""
    sizes = []
    for r in range(nprocs):
        try:
            sizes.append(os.path.getsize(rank_log(log_dir, r)))
        except OSError:
            sizes.append(-1)
    return sizes


def _is_stack_line(line: str) -> bool:
    return line.startswith(("Thread 0x", "Current thread 0x"))


def tails(log_dir, nprocs: int, lines: int = 20) -> str:
    """The end of every rank's log: its last `lines` lines, or, when it holds stack dumps,
    the `lines` lines before the first dump and every dump."""
    out = []
    for r in range(nprocs):
        path = rank_log(log_dir, r)
        try:
            text = open(path, errors="replace").read().splitlines()
        except OSError:
            out.append(f"--- rank {r}: no log ({path})")
            continue
        first = next((i for i, t in enumerate(text) if _is_stack_line(t)), None)
        if first is None:
            shown = text[-lines:]
            what = f"last {len(shown)} of {len(text)} lines"
        else:
            shown = text[max(0, first - lines):]
            what = f"lines {max(0, first - lines) + 1}..{len(text)} of {len(text)}, stacks included"
        out.append(f"--- rank {r} ({path}, {what}):")
        out += ["    " + t for t in shown]
    return "\n".join(out)


def rank_output(rank: int, log_dir):
    """In rank `rank`: from now on stdout and stderr (file descriptors 1 and 2) go to the
    rank's log, line-buffered, and SIGUSR1 or a fatal signal writes every thread's Python
    stack there. Returns a line-buffered file on the stdout the rank was started with, for
    progress lines meant for the terminal."""
    import faulthandler
    console = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(rank_log(log_dir, rank), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    faulthandler.enable(all_threads=True)                    # writes to fd 2: the log
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    print(f"rank {rank}: pid {os.getpid()}", flush=True)
    return console


def end_processes(pids, grace: float = 3.0):
    """Ask every process of `pids` for its stacks (SIGUSR1), give them `grace` seconds to
    write them, then SIGKILL those still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass
    time.sleep(grace)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def spawn(fn, args, nprocs: int, log_dir, stall: float, poll: float = 1.0):
    """torch.multiprocessing.spawn(fn, args, nprocs) with a bounded wait: returns once every
    rank has ended with status 0; raises :class:`RanksFailed` when a rank fails (torch
    ends the others) or when a live rank's log has not grown for `stall` seconds (every
    live rank then writes its stacks and is killed). `fn(rank, *args)` should call
    :func:`rank_output` with the same `log_dir` first."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException
    os.makedirs(str(log_dir), exist_ok=True)
    for r in range(nprocs):                      # the logs of an earlier run would mislead
        if os.path.exists(rank_log(log_dir, r)):
            os.unlink(rank_log(log_dir, r))
    ctx = mp.spawn(fn, args=tuple(args), nprocs=nprocs, join=False)
    sizes = log_sizes(log_dir, nprocs)
    changed = [time.monotonic()] * nprocs
    try:
        while not ctx.join(poll):
            now = time.monotonic()
            for r, (old, new) in enumerate(zip(sizes, log_sizes(log_dir, nprocs))):
                if new != old:
                    sizes[r], changed[r] = new, now
            stuck = [r for r, p in enumerate(ctx.processes)
                     if p.is_alive() and now - changed[r] > stall]
            if stuck:
                live = [p for p in ctx.processes if p.is_alive()]
                end_processes([p.pid for p in live])
                for p in live:
                    p.join(10)
                raise RanksFailed(
                    f"rank {', '.join(map(str, stuck))} wrote nothing for {stall:g} s: every "
                    f"live rank was asked for its stacks and killed\n" + tails(log_dir, nprocs))
    except ProcessException as e:
        raise RanksFailed(f"{type(e).__name__}: {str(e).strip()}\n"
                          + tails(log_dir, nprocs)) from None


def destroy_process_group():
    """``torch.distributed.destroy_process_group()``, once no DistributedDataParallel
    module is left (RuntimeError otherwise: drop them, e.g. by keeping them local to a
    function that has returned).

    Why the order matters: every DDP module's Reducer holds the process group. When a
    Reducer is the last holder, the group is destroyed from the Reducer's destructor with
    the GIL held (PyTorch 1.13, Debian's python3-torch), and ProcessGroupGloo's destructor
    joins its worker threads. A worker thread that is still freeing a tensor of the last
    collective (a tensor that Python owned) waits for the GIL to release its Python object,
    so neither thread moves again and the rank never exits. Under load that happened in
    one run in ten to one in three of `make test`'s short `make train` (a rank after its
    last step, stacks: ``Reducer::~Reducer`` -> ``ProcessGroupGloo::~ProcessGroupGloo`` ->
    ``thread::join`` against ``runLoop`` -> ``TensorImpl::destroy_pyobj_if_needed`` ->
    ``PyEval_AcquireThread``). Released from its Python object instead, with no Reducer left,
    the group is destroyed with the GIL released (its binding does that, pytorch/pytorch
    issue 56297), and the worker thread finishes."""
    import gc
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    gc.collect()
    # type(o), not isinstance: that would read __class__, which some objects warn about
    alive = sum(1 for o in gc.get_objects() if issubclass(type(o), DistributedDataParallel))
    if alive:
        raise RuntimeError(f"{alive} DistributedDataParallel module(s) still alive: their "
                           "Reducers would destroy the process group with the GIL held")
    dist.destroy_process_group()
