"""Tables from the results store: the paper's comparison, paired tests, the selected lrs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

ORDER = ("zero_shot", "icl", "sft", "kd", "ia2", "ia2+sft", "ia2->sft", "sft->ia2")
LABELS = {"zero_shot": "zero-shot", "icl": "ICL", "sft": "SFT", "kd": "KD", "ia2": "IA2",
          "ia2+sft": "IA2+SFT", "ia2->sft": "IA2→SFT", "sft->ia2": "SFT→IA2"}


def headline(row: dict) -> float | None:
    """The accuracy a table shows: label-set accuracy (classification) or exact match."""
    m = row["metrics"]
    return m.get("label_set_accuracy", m.get("exact_match"))


# One value per run identity. The adapter is not part of it (a retrained adapter is the same
# run evaluated again), except for ad-hoc `ia2 eval` rows, which have no method to name them by.
IDENTITY = ("model", "task", "method", "n", "seed", "lr", "beta", "eval_task", "setting")


def newest_first(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r.get("created") or "", r.get("key") or ""), reverse=True)


def _who(r: dict) -> str:
    extra = "".join(f" {k} {r[k]:g}" for k in ("lr", "beta") if r.get(k) is not None)
    return (f"{r['task']}→{r['eval_task']} {LABELS.get(r['method'], r['method'])} N={r['n']} "
            f"seed {r['seed']}{extra} ({r.get('setting')})")


def latest(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The newest row of each run identity (IDENTITY), and one note per identity stored more
    than once (a retrained or changed adapter evaluated again)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        ident = tuple(r.get(k) for k in IDENTITY)
        if r.get("method") is None:
            ident += (r.get("adapter"),)
        groups.setdefault(ident, []).append(r)
    kept, notes = [], []
    for group in groups.values():
        newest = newest_first(group)
        kept.append(newest[0])
        if len(group) > 1:
            notes.append(f"{_who(newest[0])}: {len(group)} evaluations stored (a retrained or "
                         f"changed adapter); the newest ({newest[0].get('created')}) is shown")
    return kept, notes


def collect(rows: list[dict], notes: list[str] | None = None) -> dict:
    """{(task, n): {eval_task: {method: {"acc": [...], "ece": [...], "seeds": [...]}}}}, one
    value per distinct seed: the newest row of each run identity (`latest`), and where one seed
    still has several (another lr, β or setting) the newest of them. What was left out is
    appended to `notes`.

    Zero-shot rows (no N) are shown under every N of their task."""
    rows, dropped = latest(rows)
    ns = defaultdict(set)
    for r in rows:
        if r["n"] is not None:
            ns[r["task"]].add(r["n"])
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for r in newest_first(rows):
        for n in ([r["n"]] if r["n"] is not None else sorted(ns[r["task"]]) or [None]):
            cell = out[(r["task"], n)][r["eval_task"]][r["method"]]
            if r["seed"] in cell["seeds"]:  # never a spread that is not over seeds
                dropped.append(f"{_who(r)}: left out, a newer row of the same seed is shown")
                continue
            cell["acc"].append(headline(r))
            cell["ece"].append(r["metrics"].get("ece"))
            cell["seeds"].append(r["seed"])
    if notes is not None:
        notes += dropped
    return out


def _fmt(values: list, digits: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def comparison(data: dict, task: str, n) -> tuple[list[str], list[list[str]]]:
    """Rows = methods, columns = evaluation tasks as `acc` and `ECE` (mean ± std over seeds)."""
    evals = list(data[(task, n)])
    evals.sort(key=lambda e: (e != task, e))
    header = ["method"] + [f"{task}→{e} {k}" for e in evals for k in ("acc", "ECE")]
    methods = {m for e in evals for m in data[(task, n)][e]}
    body = []
    for m in sorted(methods, key=lambda m: ORDER.index(m) if m in ORDER else 99):
        row = [LABELS.get(m, m)]
        for e in evals:
            cell = data[(task, n)][e].get(m, {"acc": [], "ece": []})
            row += [_fmt(cell["acc"], 3), _fmt(cell["ece"], 3)]
        body.append(row)
    return header, body


def paired(data: dict, a: str = "ia2->sft", b: str = "sft") -> list[dict]:
    """`a` vs `b` paired by seed, per (task, N, eval task): mean differences of accuracy and ECE
    and paired t-test p-values (None where fewer than 2 seeds or a constant difference)."""
    out = []
    for (task, n), evals in sorted(data.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        for e, methods in sorted(evals.items()):
            if a not in methods or b not in methods:
                continue
            row = {"task": task, "eval_task": e, "n": n}
            for metric in ("acc", "ece"):
                xa = dict(zip(methods[a]["seeds"], methods[a][metric]))
                xb = dict(zip(methods[b]["seeds"], methods[b][metric]))
                seeds = sorted(s for s in set(xa) & set(xb) if xa[s] is not None and xb[s] is not None)
                d = np.array([xa[s] - xb[s] for s in seeds])
                p = None
                if len(seeds) >= 2 and np.ptp(d) > 1e-12:  # no t statistic for a constant difference
                    p = float(stats.ttest_rel([xa[s] for s in seeds], [xb[s] for s in seeds]).pvalue)
                row.update({"seeds": len(seeds), f"d_{metric}": float(d.mean()) if len(d) else None,
                            f"p_{metric}": p})
            out.append(row)
    return out


def paired_rows(tests: list[dict]) -> list[list[str]]:
    f = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    return [[t["task"], t["eval_task"], str(t["n"]), str(t["seeds"]), f(t["d_acc"], "+.3f"),
             f(t["p_acc"], ".3g"), f(t["d_ece"], "+.3f"), f(t["p_ece"], ".3g")] for t in tests]


def verdicts(tests: list[dict], alpha: float = 0.05) -> list[str]:
    """Plain sentences: where IA2→SFT beats SFT (higher accuracy, lower ECE) and where not."""
    lines = []
    for t in tests:
        if t["d_acc"] is None:
            continue
        acc = "higher" if t["d_acc"] > 0 else "lower" if t["d_acc"] < 0 else "equal"
        ece = "lower (better)" if (t["d_ece"] or 0) < 0 else "higher (worse)"
        sig = lambda p: "" if p is None else (" (p = %.3g%s)" % (p, "" if p < alpha else ", not significant"))  # noqa: E731
        lines.append(f"- {t['task']}→{t['eval_task']}, N = {t['n']}, {t['seeds']} seed(s): IA2→SFT "
                     f"accuracy {acc} than SFT by {abs(t['d_acc']):.3f}{sig(t['p_acc'])}; ECE {ece} "
                     f"by {abs(t['d_ece'] or 0):.3f}{sig(t['p_ece'])}.")
    return lines


STAGES = ("load", "teacher", "train", "evaluate", "analysis", "other")


def stage_times(groups: list[dict]) -> list[str]:
    """Markdown lines: the study's time per pipeline stage (from the groups' `stages`), by kind
    of group; empty when no group recorded its stages."""
    timed = [g for g in groups if g.get("stages")]
    if not timed:
        return []
    kinds = sorted({g["key"].split("/")[0] for g in timed})
    total = lambda kind, st: sum(g["stages"].get(st, 0.0) for g in timed  # noqa: E731
                                 if kind in (None, g["key"].split("/")[0]))
    body = [[st] + [f"{total(k, st) / 60:.1f}" for k in kinds] + [f"{total(None, st) / 60:.1f}"]
            for st in STAGES if total(None, st) > 0]
    body.append(["all"] + [f"{sum(total(k, st) for st in STAGES) / 60:.1f}" for k in kinds]
                + [f"{sum(total(None, st) for st in STAGES) / 60:.1f}"])
    return ["## Time per stage", "",
            f"Minutes of wall time per pipeline stage, summed over the {len(timed)} groups that "
            "recorded it (load: model loading; teacher: ICL responses and activations; train: "
            "training and dev evaluation; evaluate: test-set evaluation; analysis: activation "
            "similarity and subspace overlap).", "",
            markdown(["stage", *kinds, "total"], body), ""]


def selections(run_dir: Path) -> list[list[str]]:
    rows = []
    for f in sorted((run_dir / "selection").glob("*.json")):
        s = json.loads(f.read_text())
        cands = ", ".join(f"{c['lr']:g}" + (f"/β{c['beta']:g}" if c["beta"] is not None else "")
                          + f": {c['mean_dev_loss']:#.4g}" for c in s["candidates"])
        chosen = f"{s['lr']:g}" + (f" (β={s['beta']:g})" if s["beta"] is not None else "")
        rows.append([s["task"], LABELS.get(s["method"], s["method"]), str(s["n"]), chosen, cands])
    return rows


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def csv_text(header: list[str], body: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    return buf.getvalue()


def latex(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: s.replace("±", r"$\pm$").replace("→", r"$\to$").replace("_", r"\_")  # noqa: E731
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in body]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
