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
"""

import argparse
import json
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hw"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from aggswitch.worker import AllReduceError, Worker  # noqa: E402
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


def rank_main(rank: int, a, init_file: str, out: str):
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=a.world, timeout=timedelta(seconds=a.deadline + 30))
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
            if rank == 0:
                err = "" if entry["max_err"] is None else \
                    f"  max |switch - gloo| {entry['max_err']:.3g}  exact {entry['exact']}"
                print(f"step {step:4d}  loss {entry['loss']:.4f}{err}", flush=True)
    except (AllReduceError, RuntimeError) as e:
        # an AllReduceError in the hook reaches here through autograd as a RuntimeError
        print(f"rank {rank}: {e}", file=sys.stderr, flush=True)
        ok = False
    with torch.no_grad():
        acc = float((model(X).argmax(1) == y).float().mean())
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(params) for _ in range(a.world)]
    dist.all_gather(gathered, params)
    same = all(torch.equal(g, params) for g in gathered)
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"rank": rank, "ok": ok, "steps": log, "accuracy": acc,
                   "params_equal_across_ranks": same, "stats": dict(worker.stats)}, f)
    worker.close()
    dist.destroy_process_group()


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
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        try:
            mp.spawn(rank_main, args=(a, os.path.join(tmp, "init"), out), nprocs=a.world,
                     join=True)
            ranks = [json.load(open(f"{out}.{r}")) for r in range(a.world)]
        except Exception as e:       # a rank died (its traceback is above)
            print(f"FAIL: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
            return 1
    if a.json:
        Path(a.json).write_text(json.dumps(ranks, indent=1))
    r0 = ranks[0]
    retx = sum(r["stats"].get("retransmissions", 0) for r in ranks)
    print(f"final accuracy {r0['accuracy']:.3f} (training set); parameters equal on every rank: "
          f"{all(r['params_equal_across_ranks'] for r in ranks)}; retransmissions {retx}")
    good = all(r["ok"] and r["params_equal_across_ranks"] for r in ranks)
    print("PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
