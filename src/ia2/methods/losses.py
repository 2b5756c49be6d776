"""The paper's training objectives as pure functions over tensors.

Shapes: B examples, T aligned positions (padded; `mask` [B, T] marks the real ones), L layers,
H hidden units, V vocabulary, K cached top-k. Every loss is computed per example (mean over that
example's positions) and then averaged over examples, so a batch split across data-parallel ranks
gives the same gradient as the whole batch on one process (DDP averages rank means).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGNMENTS = ("mse", "cosine", "layernorm_mse")
KD_MODES = ("full", "topk")  # exact full-vocabulary KL (default), or the cached top-k


def gather_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [B, S, ...] -> [B, T, ...]: the rows of x at `positions` [B, T]."""
    index = positions.long().view(*positions.shape, *([1] * (x.dim() - 2)))
    return torch.gather(x, 1, index.expand(*positions.shape, *x.shape[2:]))


def _per_example_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [B, T], mask [B, T] -> [B]: mean over each example's real positions."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SFT: -log p(target) at each aligned position; logits [B, T, V], targets [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return _per_example_mean(nll, mask).mean()


def kd_full(logits: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KD: KL(p_teacher || q_student) over the whole vocabulary; logits, teacher_logprobs [B, T, V].

    sum_v p_v (log p_v - log q_v) at each aligned position, temperature 1. The teacher's stored
    log-probs are renormalised (log_softmax) first: a no-op in fp32, and in fp16/bf16 it makes the
    rounded distribution sum to one, so the loss is >= 0 and exactly 0 when q = p.
    """
    if logits.shape[-1] != teacher_logprobs.shape[-1]:
        raise ValueError(f"student vocabulary {logits.shape[-1]} != teacher's {teacher_logprobs.shape[-1]}")
    # padding may hold anything: a uniform stand-in keeps values and gradients finite there
    real = mask.bool().unsqueeze(-1)
    p_log = torch.log_softmax(torch.where(real, teacher_logprobs.float(), 0.0), dim=-1)
    q_log = torch.log_softmax(logits.float(), dim=-1)
    p = p_log.exp()
    # tokens the teacher rules out (p = 0, log p = -inf) contribute exactly nothing
    kl = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)
    return _per_example_mean(kl, mask).mean()


def kd_topk(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """KD: KL(p_teacher || q_student) from the teacher's cached top-k, [B, T, K].

    Approximation: the teacher's distribution is its top-k renormalised (p_k = softmax of the
    cached log-probs); the student's log-probs are its full-vocabulary ones read at those ids.
    sum_k p_k (log p_k - log q_k) >= 0, with equality exactly when the student puts the teacher's
    renormalised top-k mass on those ids and nothing elsewhere. With K = V it equals `kd_full`.
    """
    p_log = torch.log_softmax(topk_logprobs.float(), dim=-1)
    q_log = torch.log_softmax(logits.float(), dim=-1).gather(-1, topk_ids.long())
    p = p_log.exp()
    # entries with zero teacher mass (padding of a shorter top-k) contribute exactly nothing
    kl = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)
    return _per_example_mean(kl, mask).mean()


def alignment(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
              kind: str = "mse") -> torch.Tensor:
    """IA2: distance between the student's and the teacher's site activations, [L, B, T, H].

    `mse` (the paper's): squared error averaged over positions and hidden units, summed over
    layers. `cosine`: 1 - cos per position, averaged over positions, summed over layers.
    `layernorm_mse`: MSE after normalising each activation vector to zero mean and unit variance
    (no affine), so layers with large activations do not dominate the sum.
    """
    student, teacher = student.float(), teacher.float()
    if kind == "mse":
        per_pos = (student - teacher).pow(2).mean(-1)
    elif kind == "cosine":
        per_pos = 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
    elif kind == "layernorm_mse":
        h = student.shape[-1]
        per_pos = (F.layer_norm(student, (h,)) - F.layer_norm(teacher, (h,))).pow(2).mean(-1)
    else:
        raise ValueError(f"unknown alignment {kind!r} (choose from {', '.join(ALIGNMENTS)})")
    # per_pos [L, B, T] -> per example and layer [L, B] -> sum over layers, mean over examples
    return _per_example_mean(per_pos, mask.unsqueeze(0).expand_as(per_pos)).sum(0).mean()


def ia2_sft(alignment_loss: torch.Tensor, ce_loss: torch.Tensor, beta: float) -> torch.Tensor:
    """IA2+SFT: (1 - beta) * alignment + beta * cross-entropy on the ICL response."""
    return (1.0 - beta) * alignment_loss + beta * ce_loss


def mean_cosine(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Diagnostic: cosine similarity averaged over real positions, examples and layers."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)  # [L, B, T]
    return _per_example_mean(cos, mask.unsqueeze(0).expand_as(cos)).mean()
