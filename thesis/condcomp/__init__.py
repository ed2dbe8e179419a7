"""Chapter 2 conditional-computation primitives: masking, Gumbel sampling, early exits, MoE, tokens."""

from thesis.condcomp.balancing import bpr_keep, importance_cv2, router_z_loss, switch_aux
from thesis.condcomp.early_exit import (
    DifferentiableBranching,
    MultiExit,
    branching_mixture,
    confidence_exit,
    multi_exit_loss,
    stick_breaking,
)
from thesis.condcomp.gumbel import (
    gumbel_argmax,
    gumbel_softmax,
    gumbel_topk,
    sample_gumbel,
    straight_through,
    topk_mask,
)
from thesis.condcomp.masking import DepthSkip, InputSparse, WidthSparse, mask_rows
from thesis.condcomp.moe import (
    MoE,
    Routing,
    expert_capacity,
    hash_experts,
    route_expert_choice,
    route_noisy_topk,
    route_random,
    route_topk,
)
from thesis.condcomp.record import ComputeRecord, record_from_mask
from thesis.condcomp.scorers import PooledDotScorer
from thesis.condcomp.soft_moe import SMEAR, SoftMoE
from thesis.condcomp.tokens import (
    drop_matrix,
    merge_matrix,
    monotone_mask,
    select_within,
    token_drop,
    token_merge,
    topk_tokens,
)

__all__ = [
    "ComputeRecord",
    "DepthSkip",
    "DifferentiableBranching",
    "InputSparse",
    "MoE",
    "MultiExit",
    "PooledDotScorer",
    "Routing",
    "SMEAR",
    "SoftMoE",
    "WidthSparse",
    "bpr_keep",
    "branching_mixture",
    "confidence_exit",
    "drop_matrix",
    "expert_capacity",
    "gumbel_argmax",
    "gumbel_softmax",
    "gumbel_topk",
    "hash_experts",
    "importance_cv2",
    "mask_rows",
    "merge_matrix",
    "monotone_mask",
    "multi_exit_loss",
    "record_from_mask",
    "route_expert_choice",
    "route_noisy_topk",
    "route_random",
    "route_topk",
    "router_z_loss",
    "sample_gumbel",
    "select_within",
    "stick_breaking",
    "straight_through",
    "switch_aux",
    "token_drop",
    "token_merge",
    "topk_mask",
    "topk_tokens",
]
