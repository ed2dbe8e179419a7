"""M4 of the miniature (spec F.b; thesis Fig. 4.46): how far a compressed prefix moves the residual stream.

A held-out prefix is prefilled with a press (compressed once), the next tokens are run on that cache,
and their hidden states after every layer are compared with those of the uncompressed run
(`oracle.continuation_run` for both runs): per sequence, the mean over layers and tokens of
||h - h_compressed||_2. The oracle method ("optimal" of the figure) is `oracle.FutureAttentionPress`,
scoring with the continuation's queries of the uncompressed run.
"""

from __future__ import annotations

from torch import Tensor

from thesis.kvcache.oracle import ContinuationRun, layer_errors


def reconstruction_error(reference: ContinuationRun, compressed: ContinuationRun) -> Tensor:
    """(batch,) mean over layers and continuation tokens of the L2 distance between residual states."""
    return layer_errors(reference.residual, compressed.residual).mean(dim=0)
