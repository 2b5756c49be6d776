"""Classification scoring from next-token logits at the last prompt position.

Two predictions per example (see docs/metrics.md):
- top-1: the argmax over the whole vocabulary; correct when it is the true label's first token.
  Its confidence is that token's probability under the full softmax.
- label-set: the argmax among the label tokens only; its confidence is the largest probability
  after renormalising the softmax over the label tokens. Brier and NLL use that label-set
  distribution too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import IA2Error
from .calibration import calibration_report

CONFIDENCES = ("label_set", "top1")


@dataclass
class ClassificationScores:
    records: list[dict]  # one per example, in input order
    metrics: dict[str, float]
    definitions: dict = field(default_factory=dict)


def score_classification(logits: torch.Tensor, label_ids: list[int], labels, n_bins: int = 15,
                         binning: str = "equal_mass", confidence: str = "label_set",
                         uids: list[str] | None = None) -> ClassificationScores:
    """Score [Q, V] last-position logits against true label indices `labels` (into `label_ids`).

    `confidence` picks which prediction the calibration metrics (ece, ece_equal_width, mce) are
    about: "label_set" (default) pairs label-set confidence with label-set correctness, "top1"
    pairs top-1 confidence with top-1 correctness.
    """
    if confidence not in CONFIDENCES:
        raise IA2Error(f"unknown confidence {confidence!r} (choose from {', '.join(CONFIDENCES)})")
    if logits.dim() != 2:
        raise IA2Error(f"expected [queries, vocab] logits, got shape {tuple(logits.shape)}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    q, v = logits.shape
    if y.size != q:
        raise IA2Error(f"{q} logit rows but {y.size} labels")
    if q == 0:
        raise IA2Error("no examples to score")
    if len(set(label_ids)) != len(label_ids) or not all(0 <= t < v for t in label_ids):
        raise IA2Error(f"label token ids {label_ids} must be distinct and inside the vocabulary")
    if (y.min() < 0 or y.max() >= len(label_ids)):
        raise IA2Error(f"labels must be in [0, {len(label_ids)})")

    # float64 softmax on the CPU: confidences near 1 and tiny label probabilities both matter
    # here, whatever the model's dtype and device
    logp = torch.log_softmax(logits.detach().to("cpu", torch.float64), dim=-1)
    top1_p, top1_tok = logp.exp().max(dim=-1)
    ids = torch.tensor(label_ids)
    label_logp = logp[:, ids]
    label_probs = torch.softmax(label_logp, dim=-1).numpy()  # renormalised over the label set
    top1_tok = top1_tok.numpy()
    true_tok = ids.numpy()[y]

    top1_ok = top1_tok == true_tok
    pred = label_probs.argmax(axis=1)
    set_ok = pred == y
    set_conf = label_probs.max(axis=1)

    records = [
        {
            "uid": None if uids is None else uids[i],
            "label": int(y[i]),
            "prediction": int(pred[i]),
            "label_set_correct": bool(set_ok[i]),
            "label_set_confidence": float(set_conf[i]),
            "top1_token": int(top1_tok[i]),
            "top1_correct": bool(top1_ok[i]),
            "top1_confidence": float(top1_p[i]),
            "label_probs": [float(p) for p in label_probs[i]],
        }
        for i in range(q)
    ]
    metrics, definitions = classification_metrics(records, n_bins, binning, confidence)
    return ClassificationScores(records, metrics, definitions)


def classification_metrics(records: list[dict], n_bins: int = 15, binning: str = "equal_mass",
                           confidence: str = "label_set") -> tuple[dict, dict]:
    """(metrics, definitions) of scored records: what `score_classification` reports, from its
    records alone (so slices scored apart, e.g. by several processes, can be joined)."""
    q = len(records)
    y = np.array([r["label"] for r in records], dtype=np.int64)
    label_probs = np.array([r["label_probs"] for r in records], dtype=np.float64)
    set_ok = np.array([r["label_set_correct"] for r in records])
    top1_ok = np.array([r["top1_correct"] for r in records])
    key = "label_set_confidence" if confidence == "label_set" else "top1_confidence"
    conf = np.array([r[key] for r in records], dtype=np.float64)
    ok = set_ok if confidence == "label_set" else top1_ok
    cal = calibration_report(conf, ok, label_probs, y, n_bins=n_bins, binning=binning,
                             confidence_kind=confidence)
    metrics = {
        "accuracy": float(top1_ok.mean()),
        "label_set_accuracy": float(set_ok.mean()),
        "ece": cal.ece,
        "ece_equal_width": cal.ece_equal_width,
        "ece_equal_mass": cal.ece_equal_mass,
        "mce": cal.mce,
        "brier": cal.brier,
        "nll": cal.nll,
        "n": q,
    }
    definitions = {
        "accuracy": "top-1 over the vocabulary equals the true label's first token",
        "label_set_accuracy": "argmax over the label tokens equals the true label",
        "calibration": cal.definitions.__dict__,
        "reliability": [b.__dict__ for b in cal.bins],
    }
    return metrics, definitions
