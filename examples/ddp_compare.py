#!/usr/bin/env python3
"""Train one MLP three ways side by side with PyTorch DDP, for `make train` (sim/train.py).

    make serve PORTS=4 DATA_WIDTH=256 SLOTS=16 SLOT_ELEMS=64 JOBS=1      # one terminal
    /usr/bin/python3 examples/ddp_compare.py --slot-elems 64 --window 16  # another

`--world` ranks (processes) each hold three replicas of the same network, start from the
same parameters and train on the same shard of the same batches; only the DDP
communication differs:

1. ``gloo``:   plain DDP, gloo's float all-reduce (no hook);
2. ``quant``:  aggswitch.worker.ddp.quantized_gloo_hook, the switch hook's quantisation
   summed exactly by gloo on int64 and rounded as the switch rounds its result;
3. ``switch``: aggswitch.worker.ddp.switch_allreduce_hook, every gradient bucket
   all-reduced through the switch, rank r on the r-th `--switch` endpoint.

After every step each rank compares the parameters of replicas 2 and 3 bit for bit
(torch.equal) and records the switch's cycle counter at the completion of the step's last
round (the RESULT timestamp). At the end every replica is evaluated on the held-out part
of the data set and its parameters are compared across the ranks.

The data set is scikit-learn's bundled digits (8x8 images, 10 classes): a fixed
permutation (`--seed`) keeps the last 360 images for testing; each step takes the next
`--batch` training images, split over the ranks. The model is 64-`--hidden`-10 with ReLU,
initialised from `--seed`, trained with plain SGD at `--lr`.

Prints progress on rank 0 and writes every rank's record to `--json` (per step: each
replica's loss on its shard, whether replicas 2 and 3 agree, the timestamp; at the end:
each replica's loss on the whole training set and accuracy on the test set). Exits
non-zero if a rank failed. Needs torch, scikit-learn and NumPy (Debian: python3-torch,
python3-sklearn).

Nothing waits forever (aggswitch.worker.ranks): each rank writes its output, a line per
step at least, to `--log-dir`/rank<r>.log; a switch all-reduce gives up after
`--deadline` seconds and a gloo collective 30 s later; when a rank fails or writes nothing
for `--stall` seconds, every rank writes its stacks into its log and is ended, and the run
fails with the end of every log.
"""

import argparse
import copy
import faulthandler
import json
import os
import signal
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hw"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from aggswitch.worker import AllReduceError, Worker, ranks  # noqa: E402
from aggswitch.worker.ddp import (QuantizedGlooState, SwitchHookState,  # noqa: E402
                                  quantized_gloo_hook, switch_allreduce_hook)

RUNS = ("gloo", "quant", "switch")
TEST_IMAGES = 360


def endpoints(spec: str, world: int):
    """["host:port", ...] per rank, or "host:base" meaning base + rank."""
    eps = [e.rsplit(":", 1) for e in spec.split(",")]
    if len(eps) == 1:
        return [(eps[0][0], int(eps[0][1]) + r) for r in range(world)]
    if len(eps) != world:
        raise SystemExit(f"--switch names {len(eps)} endpoints for {world} ranks")
    return [(h, int(p)) for h, p in eps]


def data(seed: int):
    """(train X, train y, test X, test y) of the digits, split by a fixed permutation."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(X))
    X = torch.tensor(X[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    return X[:-TEST_IMAGES], y[:-TEST_IMAGES], X[-TEST_IMAGES:], y[-TEST_IMAGES:]


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def gloo_timeout(a) -> float:
    """Seconds a gloo collective waits for a peer: longer than a switch all-reduce may take,
    so that a rank whose all-reduce failed reports it before its peers give up on it."""
    return a.deadline + 30


def stall_timeout(a) -> float:
    """Seconds a rank may write nothing before it counts as stuck (see aggswitch.worker.ranks):
    a step may wait a whole all-reduce deadline for a peer and then a gloo timeout."""
    return a.stall if a.stall is not None else a.deadline + gloo_timeout(a) + 30


def rank_main(rank: int, a, init_file: str, out: str, log_dir: str):
    console = ranks.rank_output(rank, log_dir)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=a.world, timeout=timedelta(seconds=gloo_timeout(a)))
    print(f"rank {rank}: process group ready", flush=True)
    record = train(rank, a, console)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(record, f)
    # train() has returned, so its DDP modules are gone: the group can go (ranks.py: why)
    ranks.destroy_process_group()
    print(f"rank {rank}: done", flush=True)


def train(rank: int, a, console) -> dict:
    """The rank's three replicas, trained side by side; returns the rank's record. Every
    DDP module lives and dies in here."""
    Xtr, ytr, Xte, yte = data(a.seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, a.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(a.hidden, 10))
    worker = Worker(endpoints(a.switch, a.world)[rank], rank, window=a.window,
                    slot_elems=a.slot_elems, timeout=a.timeout, deadline=a.deadline)
    switch_state = SwitchHookState(worker, a.dtype, a.scale)
    models, opts = {}, {}
    for name in RUNS:
        models[name] = DistributedDataParallel(copy.deepcopy(net))
        opts[name] = torch.optim.SGD(models[name].parameters(), lr=a.lr)
    models["quant"].register_comm_hook(QuantizedGlooState(a.dtype, a.scale, a.slot_elems),
                                       quantized_gloo_hook)
    models["switch"].register_comm_hook(switch_state, switch_allreduce_hook)
    per_rank = a.batch // a.world
    n_train = len(Xtr)
    log = []
    ok, error = True, None
    t0 = time.monotonic()
    try:
        for step in range(a.steps):
            start = (step * a.batch) % (n_train - a.batch + 1)
            idx = torch.arange(start + rank * per_rank, start + (rank + 1) * per_rank)
            entry = {"step": step, "loss": {}}
            for name in RUNS:
                opts[name].zero_grad()
                loss = torch.nn.functional.cross_entropy(models[name](Xtr[idx]), ytr[idx])
                loss.backward()
                opts[name].step()
                entry["loss"][name] = float(loss)
            entry["identical"] = all(torch.equal(p, q) for p, q in
                                     zip(models["quant"].parameters(), models["switch"].parameters()))
            entry["max_diff_gloo"] = float((flat(models["switch"]) - flat(models["gloo"])).abs().max())
            entry["timestamp"] = switch_state.last_timestamp
            log.append(entry)
            losses = "  ".join(f"{n} {entry['loss'][n]:.4f}" for n in RUNS)
            line = (f"step {step:4d}  loss {losses}  switch==quant "
                    f"{'yes' if entry['identical'] else 'NO'}  "
                    f"|switch-gloo| {entry['max_diff_gloo']:.2g}  ({time.monotonic() - t0:.0f} s)")
            print(f"rank {rank}: {line}", flush=True)           # the rank's log, every step
            if rank == 0 and (step % a.print_every == 0 or step == a.steps - 1):
                print(line, file=console, flush=True)
    except (AllReduceError, RuntimeError) as e:
        # an AllReduceError in the hook reaches here through autograd as a RuntimeError
        print(f"rank {rank}: {e}", flush=True)
        print(f"rank {rank}: {e}", file=console, flush=True)
        ok, error = False, str(e).splitlines()[0]
    print(f"rank {rank}: evaluating", flush=True)
    final = {}
    with torch.no_grad():
        for name in RUNS:
            m = models[name].module
            final[name] = {
                "train_loss": float(torch.nn.functional.cross_entropy(m(Xtr), ytr)),
                "test_accuracy": float((m(Xte).argmax(1) == yte).float().mean()),
                "identical_to_quant": bool(torch.equal(flat(m), flat(models["quant"].module))),
            }
    same = {}
    for name in RUNS:
        print(f"rank {rank}: comparing the {name} parameters across the ranks", flush=True)
        params = flat(models[name])
        gathered = [torch.empty_like(params) for _ in range(a.world)]
        dist.all_gather(gathered, params)
        same[name] = all(torch.equal(g, params) for g in gathered)
    worker.close()
    return {"rank": rank, "ok": ok, "error": error, "steps": log, "final": final,
            "params_equal_across_ranks": same, "stats": dict(worker.stats),
            "parameters": int(flat(net).numel()), "seconds": time.monotonic() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switch", default="127.0.0.1:16711",
                    help="HOST:BASE (rank r on BASE+r) or one HOST:PORT per rank, comma-separated")
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--dtype", default="int32", help="SPEC §4 dtype name")
    ap.add_argument("--scale", type=int, default=16, help="job scale: values travel as RNE(x * 2^scale)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--hidden", type=int, default=32, help="hidden units")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slot-elems", type=int, default=256, help="the switch's slot_elems")
    ap.add_argument("--window", type=int, default=8, help="slots used (at most the switch's slots)")
    ap.add_argument("--timeout", type=float, default=0.2, help="seconds before a chunk is retransmitted")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds an all-reduce may take at most")
    ap.add_argument("--print-every", type=int, default=25, help="progress line every N steps")
    ap.add_argument("--json", default=None, help="write the ranks' records here")
    ap.add_argument("--log-dir", default=None,
                    help="directory of the ranks' logs, rank<r>.log (default: a temporary one)")
    ap.add_argument("--stall", type=float, default=None,
                    help="seconds a rank may write nothing before every rank is killed and the "
                         "run fails (default: deadline + gloo timeout + 30)")
    a = ap.parse_args(argv)
    if a.batch % a.world:
        ap.error("--batch must be a multiple of --world")
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank")
        log_dir = a.log_dir or os.path.join(tmp, "logs")
        try:
            ranks.spawn(rank_main, (a, os.path.join(tmp, "init"), out, log_dir), a.world,
                        log_dir, stall_timeout(a))
            records = [json.load(open(f"{out}.{r}")) for r in range(a.world)]
        except ranks.RanksFailed as e:
            print(f"FAIL: {e}", flush=True)
            return 1
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))
    good = all(r["ok"] for r in records)
    every = all(s["identical"] for r in records for s in r["steps"])
    print(f"switch parameters bit-identical to quant at every step: {'yes' if every else 'NO'}; "
          + "; ".join(f"{n} test accuracy {records[0]['final'][n]['test_accuracy']:.3f}" for n in RUNS))
    print("done" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
