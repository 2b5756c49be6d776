"""The teacher's output for one example: what IA2, KD and SFT-on-ICL-outputs train on.

Aligned positions (the paper's): the last query token and every response token but the last,
i.e. the positions whose next-token prediction produces the response. So for a response of T
tokens there are T aligned positions, and in the student's input
`special_prefix + query_ids + response_ids` they are the T positions starting at
`len(special_prefix + query_ids) - 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TeacherSignals:
    response_ids: torch.Tensor  # [T] int64: the greedy ICL response, terminator included
    activations: torch.Tensor  # [L, T, H]: the site's output at the aligned positions
    topk_ids: torch.Tensor | None = None  # [T, K] int64: teacher's top-k next tokens there
    topk_logprobs: torch.Tensor | None = None  # [T, K] float: their log-probabilities
    logprobs: torch.Tensor | None = None  # [T, V] storage dtype: the full next-token log-probs

    @property
    def length(self) -> int:
        return int(self.response_ids.numel())
