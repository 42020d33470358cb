#!/usr/bin/env python3
"""Train a small MLP with PyTorch DDP, its gradients all-reduced by aggswitch.

    make serve PORTS=2 DATA_WIDTH=128 SLOTS=8 SLOT_ELEMS=32 JOBS=2     # one terminal
    /usr/bin/python3 examples/ddp_train.py --slot-elems 32 --window 8  # another

Runs `--world` ranks (processes) on this machine: the gloo process group only sets DDP
up (parameter broadcast) and, with `--check`, cross-checks every gradient bucket; the
gradients themselves are all-reduced by the DDP communication hook of
aggswitch.worker.ddp, rank r talking to the switch port at the r-th `--switch` endpoint
(or HOST:BASE+r for a single HOST:BASE). The data set is scikit-learn's bundled digits
(8x8 images, 10 classes), each rank training on its own shard of every batch; the model is
64-32-10 with a fixed seed.

Prints the loss and the largest difference from gloo's all-reduce at each step and the
final accuracy; with `--check` exits non-zero unless every bucket matched (see
aggswitch.worker.ddp). Needs torch, scikit-learn and NumPy (Debian: python3-torch,
python3-sklearn); the simulator runs in the project's venv, this runs anywhere.

Nothing waits forever (aggswitch.worker.ranks): each rank writes its output to
`--log-dir`/rank<r>.log; an all-reduce gives up after `--deadline` seconds and a gloo
collective 30 s later; when a rank fails or writes nothing for `--stall` seconds, every
rank writes its stacks into its log and is ended, and the run fails with the end of every
log.
"""

import argparse
import faulthandler
import json
import os
import signal
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hw"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from aggswitch.worker import AllReduceError, Worker, ranks  # noqa: E402
from aggswitch.worker.ddp import SwitchHookState, switch_allreduce_hook  # noqa: E402


def endpoints(spec: str, world: int):
    """["host:port", ...] per rank, or "host:base" meaning base + rank."""
    eps = [e.rsplit(":", 1) for e in spec.split(",")]
    if len(eps) == 1:
        return [(eps[0][0], int(eps[0][1]) + r) for r in range(world)]
    if len(eps) != world:
        raise SystemExit(f"--switch names {len(eps)} endpoints for {world} ranks")
    return [(h, int(p)) for h, p in eps]


def data():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def rank_main(rank: int, a, init_file: str, out: str, log_dir: str):
    console = ranks.rank_output(rank, log_dir)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=a.world, timeout=timedelta(seconds=a.deadline + 30))
    print(f"rank {rank}: process group ready", flush=True)
    record = train(rank, a, console)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(record, f)
    # train() has returned, so its DDP module is gone: the group can go (ranks.py: why)
    ranks.destroy_process_group()
    print(f"rank {rank}: done", flush=True)


def train(rank: int, a, console) -> dict:
    """The rank's training; returns its record. The DDP module lives and dies in here."""
    X, y = data()
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    model = DistributedDataParallel(net)
    worker = Worker(endpoints(a.switch, a.world)[rank], rank, window=a.window,
                    slot_elems=a.slot_elems, timeout=a.timeout, deadline=a.deadline)
    state = SwitchHookState(worker, a.dtype, a.scale, check=a.check)
    model.register_comm_hook(state, switch_allreduce_hook)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    order = np.random.default_rng(a.seed).permutation(len(X))
    per_rank = a.batch // a.world
    log = []
    ok = True
    try:
        for step in range(a.steps):
            start = (step * a.batch) % (len(X) - a.batch)
            idx = order[start + rank * per_rank:start + (rank + 1) * per_rank]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            checks = state.checks[-state.buckets:] if a.check else []
            state.checks.clear() if a.check else None
            entry = {"step": step, "loss": float(loss), "buckets": state.buckets,
                     "max_err": max((c["max_err"] for c in checks), default=None),
                     "exact": all(c["exact"] for c in checks),
                     "within_tol": all(c["within_tol"] for c in checks)}
            state.buckets = 0
            ok = ok and entry["exact"] and entry["within_tol"]
            log.append(entry)
            err = "" if entry["max_err"] is None else \
                f"  max |switch - gloo| {entry['max_err']:.3g}  exact {entry['exact']}"
            line = f"step {step:4d}  loss {entry['loss']:.4f}{err}"
            print(f"rank {rank}: {line}", flush=True)           # the rank's log, every step
            if rank == 0:
                print(line, file=console, flush=True)
    except (AllReduceError, RuntimeError) as e:
        # an AllReduceError in the hook reaches here through autograd as a RuntimeError
        print(f"rank {rank}: {e}", flush=True)
        print(f"rank {rank}: {e}", file=console, flush=True)
        ok = False
    print(f"rank {rank}: evaluating, comparing the parameters across the ranks", flush=True)
    with torch.no_grad():
        acc = float((model(X).argmax(1) == y).float().mean())
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(params) for _ in range(a.world)]
    dist.all_gather(gathered, params)
    same = all(torch.equal(g, params) for g in gathered)
    worker.close()
    return {"rank": rank, "ok": ok, "steps": log, "accuracy": acc,
            "params_equal_across_ranks": same, "stats": dict(worker.stats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switch", default="127.0.0.1:16711",
                    help="HOST:BASE (rank r on BASE+r) or one HOST:PORT per rank, comma-separated")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--dtype", default="int32", help="SPEC §4 dtype name")
    ap.add_argument("--scale", type=int, default=16, help="job scale: values travel as RNE(x * 2^scale)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slot-elems", type=int, default=256, help="the switch's slot_elems")
    ap.add_argument("--window", type=int, default=8, help="slots used (at most the switch's slots)")
    ap.add_argument("--timeout", type=float, default=0.2, help="seconds before a chunk is retransmitted")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds an all-reduce may take at most")
    ap.add_argument("--check", action="store_true", help="check every bucket against gloo")
    ap.add_argument("--json", default=None, help="write the ranks' results here")
    ap.add_argument("--log-dir", default=None,
                    help="directory of the ranks' logs, rank<r>.log (default: a temporary one)")
    ap.add_argument("--stall", type=float, default=None,
                    help="seconds a rank may write nothing before every rank is killed and the "
                         "run fails (default: 2 x deadline + 60)")
    a = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stall = a.stall if a.stall is not None else 2 * a.deadline + 60
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        log_dir = a.log_dir or os.path.join(tmp, "logs")
        try:
            ranks.spawn(rank_main, (a, os.path.join(tmp, "init"), out, log_dir), a.world,
                        log_dir, stall)
            records = [json.load(open(f"{out}.{r}")) for r in range(a.world)]
        except ranks.RanksFailed as e:
            print(f"FAIL: {e}", flush=True)
            return 1
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))
    r0 = records[0]
    retx = sum(r["stats"].get("retransmissions", 0) for r in records)
    print(f"final accuracy {r0['accuracy']:.3f} (training set); parameters equal on every rank: "
          f"{all(r['params_equal_across_ranks'] for r in records)}; retransmissions {retx}")
    good = all(r["ok"] and r["params_equal_across_ranks"] for r in records)
    print("PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
