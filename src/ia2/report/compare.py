"""The report's verdicts: IA2→SFT against SFT and IA2 against ICL per (task, N, evaluation
task), paired over seeds and queries (ia2.report.bootstrap), beside what the paper found."""

from __future__ import annotations

from .bootstrap import EQUIVALENCE, Outcomes, agreement, paired
from .tables import LABELS, markdown, newest_first

# (a, b, the paper's claim about a − b for accuracy, for ECE). The paper (abstract, Table 1):
# IA2 as a priming step before SFT improves accuracy and calibration over SFT; IA2 alone
# replicates ICL (Qwen3-4B, SST-2, N = 4: 0.827 against ICL's 0.854), a claim of closeness.
COMPARISONS = (("ia2->sft", "sft", "higher", "lower"), ("ia2", "icl", "close", None))
MIN_SEEDS = 3  # fewer seeds say too little about seed variance to set against the paper


def outcomes(rows: list[dict]) -> dict:
    """{(task, n, eval_task, method): {seed: Outcomes}} from rows (one per identity) that
    carry per-query outcomes; ICL rows under "icl", adapters under their method."""
    out: dict = {}
    for r in newest_first(rows):  # a seed's newest row, as the tables show
        if not r.get("per_query") or r["n"] is None or r["setting"] not in ("icl", "adapter"):
            continue
        cell = out.setdefault((r["task"], r["n"], r["eval_task"], r["method"]), {})
        cell.setdefault(r["seed"], (r["per_query"]["uids"], Outcomes.of(r["per_query"])))
    return out


def _interval(i) -> str:
    return f"{i.estimate:+.3f} [{i.low:+.3f}, {i.high:+.3f}]"


def _verdict(a: str, b: str, acc, ece) -> str:
    words = {"higher": "more accurate than", "lower": "less accurate than",
             "no clear difference": "no clear accuracy difference from"}
    text = f"{LABELS[a]} {words[acc.direction()]} {LABELS[b]}"
    if ece is not None:
        cal = {"lower": "better calibrated", "higher": "worse calibrated",
               "no clear difference": "no clear calibration difference"}[ece.direction()]
        text += f"; {cal}"
    return text


def section(rows: list[dict], n_boot: int = 2000) -> list[str]:
    """Markdown lines of the verdict tables (empty when no row has per-query outcomes)."""
    data = outcomes(rows)
    out = []
    for a, b, claim_acc, claim_ece in COMPARISONS:
        body = []
        for (task, n, e, m) in sorted(data, key=lambda k: (k[0], k[1], k[0] != k[2], k[2])):
            if m != a or (task, n, e, b) not in data:
                continue
            xa, xb = data[(task, n, e, a)], data[(task, n, e, b)]
            shared = sorted(s for s in set(xa) & set(xb) if xa[s][0] == xb[s][0])  # same queries
            if not shared:
                continue
            res = paired({s: xa[s][1] for s in shared}, {s: xb[s][1] for s in shared}, n_boot)
            acc, ece = res["acc"], res.get("ece")
            agree = agreement(acc, claim_acc)
            if claim_ece and ece is not None:
                agree += f" (acc), {agreement(ece, claim_ece)} (ECE)"
            if len(shared) < MIN_SEEDS:
                agree = f"– (fewer than {MIN_SEEDS} seeds)"
            body.append([task, e, str(n), str(len(shared)), _interval(acc),
                         _interval(ece) if ece else "–", _verdict(a, b, acc, ece), agree])
        if not body:
            continue
        if claim_ece:
            paper = (f"the paper finds {LABELS[a]} more accurate (Δ acc > 0) and better calibrated "
                     f"(Δ ECE < 0) than {LABELS[b]}")
        else:
            paper = (f"the paper trains {LABELS[a]} to replicate {LABELS[b]}: agreement here means "
                     f"the accuracy interval lies within ±{EQUIVALENCE:g} of 0, disagreement that it "
                     "lies wholly outside")
        out += [f"### {LABELS[a]} against {LABELS[b]}", "",
                f"Δ = {LABELS[a]} − {LABELS[b]}, mean over seeds, [95% interval] from {n_boot} "
                "bootstrap replicates drawing seeds and queries (ia2.report.bootstrap); "
                f"{paper}.", "",
                markdown(["task", "eval task", "N", "seeds", "Δ acc", "Δ ECE", "verdict",
                          "the paper's direction"], body), ""]
    return out
