"""The study's settings a reader needs to judge fidelity to the paper, from its experiment.yaml.

Keys missing from an older study's file take the defaults ia2 had before they existed, so an old
report says what actually ran."""

from __future__ import annotations

# What ia2 0.1 did where a key was not yet recorded.
LEGACY = {"balanced": True, "kd": "topk", "icl_demos": "shared", "asim_mode": "teacher_forced"}


def _icl(c: dict) -> str:
    ev = c.get("eval", {})
    mode = ev.get("icl_demos", LEGACY["icl_demos"])
    k = ev.get("icl_k")
    cap = c.get("max_demos")
    size = "N−1" + (f" (at most {cap})" if cap is not None else "") if k is None else str(k)
    if mode == "per_query":
        return f"{size} demonstrations drawn for each query from the held-out pool (the paper's)"
    return (f"{size} demonstrations, one shared set for all queries, averaged over "
            f"{ev.get('icl_sets', 1)} sets (ia2's faster option)")


def fidelity_lines(c: dict) -> list[str]:
    """One bullet per fidelity-relevant choice (docs/fidelity.md explains each)."""
    clip = (c.get("train") or {}).get("max_grad_norm")
    preset = c.get("preset", "natural")
    methods = c.get("methods", [])
    lines = [
        f"- prompt preset: `{preset}`" + (" (the authors' text)" if preset == "paper" else
                                          " (ia2's readable labels; `preset: paper` is the authors' text)"),
        "- gradient clipping: " + ("none (the paper's)" if not clip else f"at norm {clip:g}"),
        "- ICL baseline: " + _icl(c),
        "- train/dev sampling: " + ("class-balanced" if c.get("balanced", LEGACY["balanced"])
                                    else "at random (the paper's)"),
        "- learning rate" + (" and β" if "ia2+sft" in methods else "")
        + ": chosen on the dev loss (the authors' scripts choose on the evaluation set)",
    ]
    if (c.get("teacher") or {}).get("constrain_to_labels"):
        lines.append("- teacher: its first answer token constrained to the label tokens "
                     "(the paper's teacher decodes unconstrained)")
    if "ia2+sft" in methods:
        lines.append(f"- IA2+SFT β grid: {list(c.get('beta', []))}")
    if "kd" in methods:
        kd = c.get("kd", LEGACY["kd"])
        lines.append("- KD: " + ("exact KL to the teacher's full next-token distribution"
                                 if kd == "full" else "KL to the teacher's renormalised top-k"))
    asim = (c.get("analysis") or {}).get("asim_mode", LEGACY["asim_mode"])
    lines.append("- activation similarity: " + ("each model generates its own response (the paper's)"
                                                if asim == "generate" else
                                                "the adapted model is fed the ICL response"))
    return lines
