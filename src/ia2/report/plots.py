"""Report figures (matplotlib, Agg): accuracy/ECE vs N, reliability, asim, subspace overlap."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .tables import LABELS, ORDER, headline  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _methods(keys) -> list[str]:
    return sorted(keys, key=lambda m: ORDER.index(m) if m in ORDER else 99)


def metric_vs_n(rows: list[dict], task: str, eval_task: str, path: Path) -> Path:
    """Accuracy and ECE against N, one line per method (mean ± std over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ns = sorted({r["n"] for r in rows if r["n"] is not None})
    by = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    for m in _methods(by):
        for ax, get in ((axes[0], headline), (axes[1], lambda r: r["metrics"].get("ece"))):
            if m == "zero_shot":
                vals = [get(r) for r in by[m] if get(r) is not None]
                if vals:
                    ax.axhline(np.mean(vals), color="grey", ls="--", label=LABELS[m])
                continue
            xs, mu, sd = [], [], []
            for n in ns:
                vals = [get(r) for r in by[m] if r["n"] == n and get(r) is not None]
                if vals:
                    xs.append(n), mu.append(np.mean(vals)), sd.append(np.std(vals))
            if xs:
                ax.errorbar(xs, mu, yerr=sd, marker="o", capsize=3, label=LABELS.get(m, m))
    axes[0].set_ylabel("accuracy")
    axes[1].set_ylabel("ECE (15 equal-mass bins)")
    for ax in axes:
        ax.set_xlabel("N (training examples)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns or [1], labels=[str(n) for n in ns] or ["1"])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task} → {eval_task}")
    return _save(fig, path)


def reliability(rows: list[dict], title: str, path: Path) -> Path | None:
    """One panel per method: accuracy per confidence bin against the diagonal (first seed)."""
    panels = []
    for m in _methods({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["seed"] or 0)
        bins = mine[0]["definitions"].get("reliability") if mine else None
        if bins:
            panels.append((m, bins))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (m, bins) in zip(axes[0], panels):
        used = [b for b in bins if b["count"]]
        ax.bar([b["confidence"] for b in used], [b["accuracy"] for b in used],
               width=[max(b["upper"] - b["lower"], 0.01) for b in used], alpha=0.7,
               edgecolor="k", align="center")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_title(LABELS.get(m, m), fontsize=9)
        ax.set_xlabel("confidence")
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def asim(files: list[Path], title: str, path: Path) -> Path | None:
    if not files:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    docs = [json.loads(f.read_text()) for f in files]
    for d in sorted(docs, key=lambda d: ORDER.index(d["model"]) if d["model"] in ORDER else -1):
        label = "base (no adapter)" if d["model"] == "base" else LABELS.get(d["model"], d["model"])
        ax.plot(range(len(d["per_layer"])), d["per_layer"], marker=".", label=label)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("cosine similarity to ICL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def subspace(files: list[Path], title: str, path: Path) -> Path | None:
    if not files:
        return None
    docs = [json.loads(f.read_text()) for f in files]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = [f"{LABELS.get(d['a'], d['a'])} vs {LABELS.get(d['b'], d['b'])}" for d in docs]
    ax.bar(names, [d["overlap"] for d in docs], color="tab:blue", alpha=0.8, label="overlap")
    ax.axhline(np.mean([d["random_empirical"] for d in docs]), color="k", ls="--",
               label="random subspaces")
    ax.set_ylabel("mean ‖U₁ᵀU₂‖²_F / r")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    plt.setp(ax.get_xticklabels(), rotation=15, fontsize=8)
    return _save(fig, path)
