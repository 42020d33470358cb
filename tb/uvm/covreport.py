"""The functional coverage model of the pyuvm environment (bins, crosses and the bins this
build cannot reach) and its report. Plain Python: tb/uvm/coverage.py instantiates the
model with cocotb-coverage inside a simulation; the regression (sim/regress.py) merges the
runs' YAML databases and writes the report with the same definitions.

Bins are strings (cross bins tuples of strings), so that cocotb-coverage's YAML export
(``str()`` of a tuple) reads back unambiguously.

Every bin of a report is one of:

* hit;
* unreachable in this build -- it needs a dtype the RTL does not admit yet (such frames
  are dropped as MALFORMED, docs/SPEC.md §10.2 rule 7), or is impossible whatever the
  build (a NaN in INT32). Such a bin is listed with its reason; a hit on one is an error
  (the model and the build disagree about what the build admits);
* excluded by the run's knobs -- reachable in this build, but the run's ``dtypes`` knob
  left the dtype out;
* not hit -- reachable and wanted: a coverage hole.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from tb.model import frames as F

ROOT = "aggswitch"
DTYPES = tuple(F.DTYPE_NAMES)
OUTCOMES = ("new", "join", "complete", "resend", "duplicate", "mismatch", "not_agg",
            "malformed", "job_disabled", "slot_range", "worker")
ENGINE_OUTCOMES = ("new", "join", "complete", "resend", "duplicate", "mismatch")
ORIGINS = ("first", "retx", "mismatch", "noise")
ORIGIN_OUTCOMES = {
    "first": ("new", "join", "complete"),
    "retx": ("new", "join", "complete", "resend", "duplicate"),
    "mismatch": ("mismatch",),
    "noise": ("not_agg", "malformed", "job_disabled", "slot_range", "worker"),
}
BANKS = ("0", "1")
BP = ("free", "stalled")
COUNTS = ("one", "partial", "full")
KINDS = ("multicast", "unicast")
YESNO = ("no", "yes")
DELIVERY = ("delivered", "lost")
LATENCY = ("idle_exact", "loaded")
ATTEMPTS = ("1", "2", "3", "4+")
RECOVERY = ("clean", "data_lost", "result_lost", "data_and_result_lost")
MISMATCH_KINDS = ("seq", "scale", "count", "dtype")

SUPPORTED_REASON = ("dtype {d} is not admitted by this build: its DATA frames are dropped "
                    "as MALFORMED (docs/SPEC.md §10.2 rule 7) before admission and "
                    "aggregation, until the RTL aggregates it")


def spec(meta: dict) -> list:
    """[(group, [(point, bins)], [(cross, [points], ignored bins)])] for a run's meta
    (``ports``, ``noise_cases``)."""
    P = meta["ports"]
    positions = tuple(str(i) for i in range(P))
    ports = tuple(f"p{i}" for i in range(P))
    impossible = [(o, org) for org in ORIGINS for o in OUTCOMES if o not in ORIGIN_OUTCOMES[org]]
    return [
        ("data", [
            ("dtype", DTYPES),            # frames admitted (that reach the engine)
            ("hdr_dtype", DTYPES),        # the dtype field of any AGG frame
            ("outcome", OUTCOMES),
            ("bank", BANKS),
            ("position", positions),      # arrival order within the round
            ("ingress_bp", BP),
            ("origin", ORIGINS),
            ("port", ports),
            ("count", COUNTS),
        ], [
            ("dtype_x_outcome", ["hdr_dtype", "outcome"], [(None, "not_agg")]),
            ("dtype_x_outcome_x_bank", ["hdr_dtype", "outcome", "bank"],
             [(None, "not_agg", None)]),
            ("outcome_x_bank", ["outcome", "bank"], [("not_agg", None)]),
            ("outcome_x_bp", ["outcome", "ingress_bp"], []),
            ("outcome_x_origin", ["outcome", "origin"], impossible),
            ("position_x_port", ["position", "port"], []),
            ("dtype_x_bank_x_position", ["dtype", "bank", "position"], []),
            ("count_x_outcome", ["count", "outcome"],
             [(None, o) for o in OUTCOMES if o not in ENGINE_OUTCOMES]),
        ]),
        ("result", [
            ("kind", KINDS),
            ("dtype", DTYPES),
            ("bank", BANKS),
            ("egress_bp", BP),
            ("delivery", DELIVERY),
            ("overflow", YESNO),
            ("nan", YESNO),
            ("port", ports),
        ], [
            ("kind_x_bank_x_bp", ["kind", "bank", "egress_bp"], []),
            ("kind_x_delivery", ["kind", "delivery"], []),
            ("dtype_x_kind", ["dtype", "kind"], []),
            ("dtype_x_overflow", ["dtype", "overflow"], []),
            ("dtype_x_nan", ["dtype", "nan"], []),
            ("port_x_kind", ["port", "kind"], []),
        ]),
        ("latency", [
            ("class", LATENCY),
            ("kind", KINDS),
        ], [
            ("class_x_kind", ["class", "kind"], []),
        ]),
        ("host", [
            ("attempts", ATTEMPTS),
            ("recovery", RECOVERY),
            ("dtype", DTYPES),
        ], [
            ("recovery_x_attempts", ["recovery", "attempts"],
             [("data_lost", "1"), ("result_lost", "1"), ("data_and_result_lost", "1"),
              ("data_and_result_lost", "2")]),
            ("dtype_x_recovery", ["dtype", "recovery"], []),
        ]),
        ("mismatch", [("kind", MISMATCH_KINDS)], []),
        ("noise", [("case", tuple(meta.get("noise_cases", ())))], []),
    ]


def all_bins(meta: dict) -> dict:
    """{item full name: [bins]} of the model (crosses without their ignored bins)."""
    import itertools
    out = {}
    for group, points, crosses in spec(meta):
        pbins = {}
        for name, bins in points:
            out[f"{ROOT}.{group}.{name}"] = list(bins)
            pbins[name] = bins
        for name, items, ign in crosses:
            bins = []
            for b in itertools.product(*(pbins[i] for i in items)):
                if not any(all(x is None or x == y for x, y in zip(ig, b)) for ig in ign):
                    bins.append(b)
            out[f"{ROOT}.{group}.{name}"] = bins
    return out


def _coordinates(item: str, meta) -> tuple:
    """(indices of the dtype coordinates, index of the outcome coordinate or None) of an
    item's bins. The dtype of an admitted frame (`dtype`) is always a dtype coordinate;
    the header's dtype (`hdr_dtype`) only in a cross with the outcome."""
    group, name = item.split(".")[1:3]
    for g, points, crosses in spec(meta):
        if g != group:
            continue
        for pname, _ in points:
            if pname == name:
                return ([0] if pname == "dtype" else []), None
        for cname, items, _ in crosses:
            if cname == name:
                return ([i for i, p in enumerate(items) if p in ("dtype", "hdr_dtype")],
                        items.index("outcome") if "outcome" in items else None)
    return [], None


def classify(meta: dict) -> dict:
    """{item: {bin: (category, reason)}} for the bins that are not plain "wanted" bins:
    category "unreachable" (this build cannot reach it) or "excluded" (the run's knobs
    leave it out)."""
    supported = set(meta["supported"])
    used = set(meta.get("used", meta["supported"]))
    out = {}
    for item, bins in all_bins(meta).items():
        marks = {}
        dpos, opos = _coordinates(item, meta)
        for b in bins:
            t = b if isinstance(b, tuple) else (b,)
            dts = [t[i] for i in dpos]
            outcome = t[opos] if opos is not None and dpos else None
            for d in dts:
                if d not in supported and outcome != "malformed":
                    marks[b] = ("unreachable", SUPPORTED_REASON.format(d=d))
                    break
                if (d not in used and outcome not in
                        ("malformed", "job_disabled", "slot_range", "worker")):
                    marks[b] = ("excluded", f"dtype {d} is admitted by this build but not in "
                                "this run's dtypes knob")
                    break
            if b in marks:
                continue
            if "join" in t and meta.get("workers", meta["ports"]) < 3:
                marks[b] = ("unreachable", "a round of two workers has no join: the second "
                            "contribution completes it")
            elif item == f"{ROOT}.result.dtype_x_nan" and b == ("int32", "yes"):
                marks[b] = ("unreachable", "INT32 has no NaN encoding (docs/SPEC.md §4)")
            elif item == f"{ROOT}.result.nan" and b == "yes" and supported <= {"int32"}:
                marks[b] = ("unreachable", "the build admits no dtype with a NaN encoding "
                            "(INT32 only)")
            elif item == f"{ROOT}.mismatch.kind" and b == "dtype" and len(supported) < 2:
                marks[b] = ("unreachable", "a dtype mismatch needs a second dtype admitted by "
                            "this build (another dtype is dropped as MALFORMED first)")
            elif item == f"{ROOT}.data.count" and b == "one" and used and \
                    all(F.is_mx(F.DTYPE_NAMES.index(d)) for d in used):
                marks[b] = ("excluded", "MX dtypes only: count is a multiple of 32")
        if marks:
            out[item] = marks
    return out


# ------------------------------------------------------------------ YAML databases

def bin_of(key):
    """A bin as stored in cocotb-coverage's YAML export (str() of a tuple) -> the bin."""
    if isinstance(key, str) and key.startswith("("):
        try:
            return tuple(ast.literal_eval(key))
        except (ValueError, SyntaxError):
            return key
    return key


def load_hits(db: dict) -> dict:
    """{item: {bin: hits}} from a cocotb-coverage YAML database (dict)."""
    out = {}
    for name, attrs in db.items():
        hits = attrs.get("bins:_hits") if isinstance(attrs, dict) else None
        if hits is None:
            continue
        out[name] = {bin_of(k): int(v) for k, v in hits.items()}
    return out


def merge_files(paths, out_file: Path) -> dict:
    """Merge cocotb-coverage YAML files (cocotb_coverage.coverage.merge_coverage) into
    `out_file`; returns the merged database."""
    import yaml
    from cocotb_coverage.coverage import merge_coverage
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no coverage file to merge")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    merge_coverage(lambda *a: None, str(out_file), *paths)
    return yaml.safe_load(out_file.read_text())


def merge_meta(metas: list) -> dict:
    """Meta of merged runs: the same build (parameters, supported dtypes) for all; the
    union of the dtypes used, noise cases and seeds."""
    if not metas:
        raise ValueError("no meta to merge")
    m = dict(metas[0])
    for other in metas[1:]:
        for k in ("params", "ports", "supported"):
            if other.get(k) != m.get(k):
                raise ValueError(f"coverage of different builds: {k} {other.get(k)} vs {m.get(k)}")
        m["used"] = sorted(set(m.get("used", [])) | set(other.get("used", [])),
                           key=DTYPES.index)
        m["noise_cases"] = list(dict.fromkeys(list(m.get("noise_cases", []))
                                              + list(other.get("noise_cases", []))))
        m["seeds"] = list(m.get("seeds", [])) + list(other.get("seeds", []))
    return m


# ----------------------------------------------------------------------- report

def _fmt(b) -> str:
    return " x ".join(b) if isinstance(b, tuple) else str(b)


def analyse(hits: dict, meta: dict) -> dict:
    """Per-bin categories and totals."""
    marks = classify(meta)
    items = {}
    tot = {"bins": 0, "hit": 0, "unreachable": 0, "excluded": 0, "holes": 0,
           "hit_unreachable": 0}
    for item, bins in all_bins(meta).items():
        h = hits.get(item, {})
        rows = []
        for b in bins:
            n = h.get(b, 0)
            cat, reason = marks.get(item, {}).get(b, ("wanted", ""))
            if cat == "unreachable" and n:
                state = "HIT-UNREACHABLE"
                tot["hit_unreachable"] += 1
            elif cat == "unreachable":
                state = "unreachable"
                tot["unreachable"] += 1
            elif n:
                state = "hit"
                tot["hit"] += 1
            elif cat == "excluded":
                state = "excluded"
                tot["excluded"] += 1
            else:
                state = "hole"
                tot["holes"] += 1
            tot["bins"] += 1
            rows.append((b, n, state, reason))
        items[item] = rows
    reachable = tot["bins"] - tot["unreachable"] - tot["hit_unreachable"] - tot["excluded"]
    tot["reachable"] = reachable
    tot["percent"] = round(100.0 * tot["hit"] / reachable, 1) if reachable else 100.0
    return {"items": items, "totals": tot}


def render(hits: dict, meta: dict, title: str) -> tuple:
    """(report text, summary dict)."""
    a = analyse(hits, meta)
    t = a["totals"]
    sup = ", ".join(meta["supported"])
    unsup = [d for d in DTYPES if d not in meta["supported"]]
    lines = [title, "=" * len(title), ""]
    lines.append(f"parameters {meta.get('params')}; simulator {meta.get('sim', '?')}; "
                 f"test {meta.get('test', '?')}; seeds {' '.join(map(str, meta.get('seeds', [])))}")
    lines.append(f"dtypes admitted by this build: {sup}; used by the workers: "
                 f"{', '.join(meta.get('used', []))}")
    if unsup:
        lines.append(f"dtypes this build does not admit: {', '.join(unsup)} (dropped as "
                     "MALFORMED, docs/SPEC.md §10.2 rule 7): every bin that needs one of them "
                     "admitted is unreachable in this build (listed below with the reason)")
    lines += ["", f"summary: {t['bins']} bins: {t['hit']} hit, {t['holes']} not hit, "
              f"{t['unreachable']} unreachable in this build, {t['excluded']} excluded by "
              f"the run's knobs" + (f", {t['hit_unreachable']} HIT ALTHOUGH UNREACHABLE"
                                     if t["hit_unreachable"] else ""),
              f"coverage of the reachable bins: {t['hit']}/{t['reachable']} = {t['percent']} %",
              ""]
    lines.append(f"{'item':<44} {'hit':>5} {'reach':>6} {'unreach':>8} {'excl':>5}")
    for item, rows in a["items"].items():
        c = {s: sum(1 for r in rows if r[2] == s) for s in
             ("hit", "hole", "unreachable", "excluded", "HIT-UNREACHABLE")}
        reach = c["hit"] + c["hole"]
        lines.append(f"{item[len(ROOT) + 1:]:<44} {c['hit']:>5} {reach:>6} "
                     f"{c['unreachable'] + c['HIT-UNREACHABLE']:>8} {c['excluded']:>5}")
    holes = [(i, r) for i, rows in a["items"].items() for r in rows if r[2] == "hole"]
    lines += ["", f"not hit ({len(holes)} reachable bins):"]
    lines += [f"  {i[len(ROOT) + 1:]}: {_fmt(r[0])}" for i, r in holes] or ["  none"]
    bad = [(i, r) for i, rows in a["items"].items() for r in rows if r[2] == "HIT-UNREACHABLE"]
    if bad:
        lines += ["", "ERROR: bins hit although this build cannot reach them:"]
        lines += [f"  {i[len(ROOT) + 1:]}: {_fmt(r[0])} ({r[1]} hits): {r[3]}" for i, r in bad]
    reasons = {}
    for i, rows in a["items"].items():
        for r in rows:
            if r[2] in ("unreachable", "excluded"):
                reasons.setdefault((r[2], r[3]), []).append(f"{i[len(ROOT) + 1:]}: {_fmt(r[0])}")
    for (cat, reason), bins in reasons.items():
        head = "unreachable in this build" if cat == "unreachable" else "excluded by the knobs"
        lines += ["", f"{head} ({len(bins)} bins): {reason}"]
        lines += [f"  {b}" for b in bins]
    lines += ["", "hits per bin:"]
    for item, rows in a["items"].items():
        shown = ", ".join(f"{_fmt(r[0])}={r[1]}" for r in rows if r[2] != "unreachable")
        lines.append(f"  {item[len(ROOT) + 1:]}: {shown}")
    summary = dict(t)
    summary["holes_list"] = [f"{i[len(ROOT) + 1:]}: {_fmt(r[0])}" for i, r in holes]
    summary["hit_unreachable_list"] = [f"{i[len(ROOT) + 1:]}: {_fmt(r[0])}" for i, r in bad]
    summary["unreachable_dtypes"] = unsup
    return "\n".join(lines) + "\n", summary


def write_report(db: dict, meta: dict, out_dir: Path, title: str,
                 stem: str = "coverage") -> dict:
    """Write <stem>_report.txt and <stem>_summary.json into `out_dir`; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text, summary = render(load_hits(db), meta, title)
    (out_dir / f"{stem}_report.txt").write_text(text)
    (out_dir / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summary_line(s: dict) -> str:
    return (f"{s['hit']}/{s['reachable']} reachable bins hit ({s['percent']} %), "
            f"{s['holes']} not hit, {s['unreachable']} unreachable in this build, "
            f"{s['excluded']} excluded by knobs"
            + (f", {s['hit_unreachable']} HIT ALTHOUGH UNREACHABLE" if s["hit_unreachable"]
               else ""))
