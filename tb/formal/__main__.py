"""`make formal`: run the proof sets (and their cover runs and mutants), print a table.

    python -m tb.formal                 # every proof set and cover run
    python -m tb.formal --quick         # the quick subset of `make test`
    python -m tb.formal --only axil,rounds
    python -m tb.formal --mutants       # every mutant must FAIL its property set
    python -m tb.formal --list
"""

import argparse
import sys

from . import common, axil, axis, rounds, response, mutants

UNITS = (axil, axis, rounds, response)


def all_proofs():
    out = []
    for unit in UNITS:
        out += unit.proof_sets()
    return out


def harness_for_mutant(mutant, module):
    """The harness of the mutant's proof set, built on the mutated module."""
    proof = {p.name: p for p in all_proofs()}[mutant.proof]
    if mutant.module == "control":
        return proof, axil.AxiLiteHarness(control_cls=module.ControlPlane)
    if mutant.module == "egress":
        return proof, axis.AxiStreamHarness(deparser_cls=module.ResultDeparser)
    if mutant.module == "engine" and mutant.groups:
        return proof, proof.build(engine_cls=module.AggregationEngine, groups=mutant.groups)
    if mutant.module == "engine":
        return proof, proof.build(engine_cls=module.AggregationEngine)
    raise ValueError(mutant.module)


def table(results, title):
    print()
    print(title)
    print(f"  {'property set':<22} {'mode':<6} {'depth':>5}  {'result':<8} {'time':>8}  detail")
    for r in results:
        print(f"  {r.name:<22} {r.mode:<6} {r.depth:>5}  {r.status:<8} {r.seconds:>7.1f}s  {r.detail}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="formal proofs of aggswitch (SymbiYosys)")
    ap.add_argument("--quick", action="store_true", help="only the quick subset (make test)")
    ap.add_argument("--only", help="comma-separated property sets")
    ap.add_argument("--mutants", action="store_true", help="run the mutants, each must FAIL")
    ap.add_argument("--mutant", help="with --mutants: only these (comma-separated)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)

    proofs = [p for p in all_proofs() if not p.mutants_only]
    if args.list:
        for p in proofs:
            print(f"{p.name:<22} {p.mode:<6} depth {p.depth:>3}  {p.title}")
        for mu in mutants.MUTANTS:
            print(f"mutant {mu.name:<22} -> {mu.proof}: {mu.kills}")
        return 0
    if args.only:
        names = set(args.only.split(","))
        proofs = [p for p in proofs if p.name in names]
    if args.quick:
        proofs = [p for p in proofs if p.quick]

    ok = True
    if not args.mutants:
        results = []
        for p in proofs:
            r = common.run(p)
            expect = p.expect
            if expect != "PASS":
                r.detail = f"(expected {expect}) {r.detail}"
            results.append(r)
            print(f"{r.name}: {r.status} ({r.seconds:.1f} s)", flush=True)
            ok &= r.status == expect
        table(results, "formal proofs (PASS: proven by k-induction in mode prove, no counterexample "
                       "within the depth in mode bmc, every cover reached in mode cover)")
    else:
        results = []
        for mu in mutants.MUTANTS:
            if args.only and mu.proof not in set(args.only.split(",")):
                continue
            if args.mutant and mu.name not in set(args.mutant.split(",")):
                continue
            module = mutants.load(mu)
            proof, harness = harness_for_mutant(mu, module)
            r = common.run(proof, harness=harness, out_dir=common.BUILD / f"mutant_{mu.name}")
            r.name = mu.name
            r.detail = f"{mu.proof}: {r.detail or mu.kills}"
            results.append(r)
            print(f"mutant {mu.name}: {r.status} ({r.seconds:.1f} s)", flush=True)
            ok &= r.status == "FAIL"
        table(results, "mutants (each must FAIL: the proof catches the bug)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
