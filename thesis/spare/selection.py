"""SpARE step 2 (thesis 5.1.3, Eq. 5.5): which SAE latents carry the knowledge-selection behaviour.

Mutual information I(Z_i; Y) between each latent and the behaviour label (1 = answered from
context, 0 = from memory) with scikit-learn's kNN estimator (`mutual_info_classif`), features
MinMax-scaled and the estimator seeded (the authors' code leaves it unseeded). Latents are ranked
per layer; the smallest k whose MI mass reaches K is kept (Eq. 5.5); the sign of E_C[Z_i] - E_M[Z_i]
puts each kept latent in the context or the memory vector, exact ties are skipped (code), and the
vectors hold the (weighted) mean activation of their group on their support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WEIGHTINGS = ("none", "thesis", "code", "code_answer_only")


def mutual_information(Z: np.ndarray, y: np.ndarray, seed: int = 0, minmax: bool = True, n_neighbors: int = 3,
                       chunk: int = 1000, n_jobs: int = 1) -> np.ndarray:
    """I(Z_i; Y) per column of Z (N, n); constant columns get 0 without calling the estimator.
    Columns go to the estimator in chunks of `chunk`, `n_jobs` chunks at a time (joblib)."""
    from joblib import Parallel, delayed
    from sklearn.feature_selection import mutual_info_classif

    Z = np.asarray(Z, dtype=np.float32)
    mi = np.zeros(Z.shape[1])
    live = np.flatnonzero(Z.max(0) > Z.min(0))
    if not len(live) or len(np.unique(y)) < 2:
        return mi

    def estimate(columns: np.ndarray) -> np.ndarray:
        X = Z[:, columns].astype(np.float64)
        if minmax:
            low, high = X.min(0), X.max(0)
            X = (X - low) / (high - low)
        return mutual_info_classif(X, y, discrete_features=False, n_neighbors=n_neighbors, random_state=seed)

    chunks = [live[start:start + chunk] for start in range(0, len(live), chunk)]
    results = Parallel(n_jobs=n_jobs)(delayed(estimate)(columns) for columns in chunks)
    for columns, values in zip(chunks, results):
        mi[columns] = values
    return mi


def mi_mass_count(mi: np.ndarray, K: float) -> int:
    """Eq. 5.5: the smallest k whose top-k share of the total MI is >= K (0 if there is no MI)."""
    total = float(np.sum(mi))
    if total <= 0:
        return 0
    share = np.cumsum(np.sort(mi)[::-1]) / total
    return int(min(np.searchsorted(share, K - 1e-12) + 1, len(mi)))


def confidence_weights(loss_own: np.ndarray, loss_other: np.ndarray, scheme: str) -> np.ndarray:
    """Per-sample weights of one group's mean vector (spec A.4).

    `loss_own` / `loss_other`: LM loss (mean token NLL) of the answer the sample gave / of the other
    answer. `thesis`: lambda = log P(own) / (log P(own) + log P(other)), literal and unnormalised
    (small when the model is confident); `code` / `code_answer_only`: loss_other / (loss_own +
    loss_other), renormalised to sum 1 (large when confident); `none`: 1/N.
    """
    loss_own, loss_other = np.asarray(loss_own, float), np.asarray(loss_other, float)
    if scheme == "none":
        return np.full(len(loss_own), 1.0 / max(len(loss_own), 1))
    if scheme == "thesis":
        log_own, log_other = -loss_own, -loss_other
        return log_own / (log_own + log_other)
    if scheme in ("code", "code_answer_only"):
        weights = loss_other / (loss_own + loss_other)
        return weights / weights.sum()
    raise ValueError(f"spare.weighting={scheme!r} is not one of {WEIGHTINGS}")


@dataclass
class FunctionalVectors:
    """z_C and z_M of one layer (disjoint supports), with the ranking that produced them."""

    z_context: torch.Tensor
    z_memory: torch.Tensor
    mi: np.ndarray
    k: int
    context_latents: list[int]
    memory_latents: list[int]


def functional_vectors(Z_C: np.ndarray, Z_M: np.ndarray, K: float, w_C: np.ndarray | None = None,
                       w_M: np.ndarray | None = None, mi: np.ndarray | None = None, seed: int = 0,
                       n_jobs: int = 1) -> FunctionalVectors:
    """Select latents by Eq. 5.5 and build z_C, z_M from the groups' codes Z_C (N_C, n), Z_M (N_M, n)."""
    Z_C, Z_M = np.asarray(Z_C, np.float32), np.asarray(Z_M, np.float32)
    if mi is None:
        y = np.r_[np.ones(len(Z_C)), np.zeros(len(Z_M))].astype(int)
        mi = mutual_information(np.vstack([Z_C, Z_M]), y, seed=seed, n_jobs=n_jobs)
    k = mi_mass_count(mi, K)
    w_C = np.full(len(Z_C), 1 / len(Z_C)) if w_C is None else np.asarray(w_C, float)
    w_M = np.full(len(Z_M), 1 / len(Z_M)) if w_M is None else np.asarray(w_M, float)
    difference = Z_C.mean(0, dtype=np.float64) - Z_M.mean(0, dtype=np.float64)
    mean_C, mean_M = w_C @ Z_C.astype(np.float64), w_M @ Z_M.astype(np.float64)
    context, memory = [], []
    for i in np.argsort(-mi, kind="stable"):
        if len(context) + len(memory) >= k or mi[i] <= 0:
            break
        if difference[i] > 0:
            context.append(int(i))
        elif difference[i] < 0:
            memory.append(int(i))
    z_C, z_M = np.zeros(Z_C.shape[1]), np.zeros(Z_C.shape[1])
    z_C[context], z_M[memory] = mean_C[context], mean_M[memory]
    return FunctionalVectors(torch.tensor(z_C, dtype=torch.float32), torch.tensor(z_M, dtype=torch.float32),
                             mi, k, context, memory)


def random_latent_vectors(Z_C: np.ndarray, Z_M: np.ndarray, n_context: int, n_memory: int,
                          seed: int) -> FunctionalVectors:
    """Control (i) of spec C.3: as many latents as SpARE picked, drawn at random, values = group means."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(Z_C.shape[1], size=n_context + n_memory, replace=False)
    context, memory = picks[:n_context].tolist(), picks[n_context:].tolist()
    z_C, z_M = np.zeros(Z_C.shape[1]), np.zeros(Z_C.shape[1])
    z_C[context], z_M[memory] = np.mean(Z_C, 0)[context], np.mean(Z_M, 0)[memory]
    return FunctionalVectors(torch.tensor(z_C, dtype=torch.float32), torch.tensor(z_M, dtype=torch.float32),
                             np.zeros(Z_C.shape[1]), n_context + n_memory, context, memory)
