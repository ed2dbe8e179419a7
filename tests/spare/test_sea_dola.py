"""SEA (spectral editing of activations) and DoLa (contrasting layers) baselines of Table 5.1."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from thesis.core.errors import ConfigError
from thesis.spare.dola import candidate_layers, dola_generate, dola_scores, early_exit_logits, jensen_shannon, plausible
from thesis.spare.generation import generate
from thesis.spare.hooks import Capture, edit
from thesis.spare.sea import fit_sea, fit_sea_direction, n_leading, neutral_rows, sqexp, sqexp_inverse

D = 8


def planted(n: int = 400, seed: int = 0):
    """Neutral rows; positives that echo the neutral activation along e0, negatives along e1."""
    g = torch.Generator().manual_seed(seed)
    neutral = torch.linalg.qr(torch.randn(n, D, generator=g, dtype=torch.float64)).Q * n ** 0.5  # X^T X / n = I
    positive, negative = 0.05 * torch.randn(2, n, D, generator=g, dtype=torch.float64)
    positive[:, 0] += 3 * neutral[:, 0]
    negative[:, 1] += 3 * neutral[:, 1]
    return neutral, positive, negative


def test_planted_directions_are_kept_and_removed():
    neutral, positive, negative = planted()
    sea = fit_sea(neutral, positive, neutral, negative, keep_ratio=0.9, remove_ratio=0.9)
    assert sea.keep_basis.shape == (D, 1) and sea.remove_basis.shape == (D, 1)
    assert abs(sea.keep_basis[0, 0]) > 0.999 and abs(sea.remove_basis[1, 0]) > 0.999
    h = torch.tensor([[1.0, 1.0] + [0.0] * (D - 2)])
    edited = sea(h)
    assert abs(edited[0, 1]) < 0.01 and edited[0, 0] > 1.3  # e1 removed, the norm kept on e0
    assert torch.isclose(edited.norm(), h.norm(), atol=1e-6)


def test_sea_parts_are_projections_and_the_kept_subspace_is_unchanged():
    neutral, positive, negative = planted()
    sea = fit_sea(neutral, positive, neutral, negative, keep_k=3, remove_k=2)
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for project in (sea.keep, sea.remove):
        once = project(x)
        assert torch.allclose(project(once), once, atol=1e-12)  # idempotent
        assert torch.allclose(once @ x.T, x @ once.T, atol=1e-12)  # symmetric (orthogonal projection)
    overlap = sea.remove_basis.T @ sea.keep_basis  # (2, 3): kept vectors K c with overlap c = 0 survive both
    untouched = sea.keep_basis @ torch.linalg.svd(overlap).Vh[2:].T  # (D, 1): kept and orthogonal to removed
    h = (untouched.T * torch.tensor([[2.0], [-0.5]], dtype=torch.float64)).float()
    assert torch.allclose(sea(h), h, atol=1e-5)


def test_few_rows_take_the_reduced_svd_with_the_same_subspace():
    g = torch.Generator().manual_seed(2)
    neutral, target = torch.randn(20, 50, generator=g, dtype=torch.float64), torch.randn(20, 50, generator=g,
                                                                                         dtype=torch.float64)
    U = torch.linalg.svd(neutral.T @ target / 20).U[:, :5]
    sea = fit_sea(neutral, target, neutral, target, keep_k=5, remove_k=5)
    assert torch.allclose(sea.keep_basis @ sea.keep_basis.T, U @ U.T, atol=1e-10)
    s = torch.linalg.svdvals(neutral.T @ target / 20)
    assert fit_sea(neutral, target, neutral, target, keep_ratio=0.8).keep_basis.shape[1] == n_leading(s, 0.8, None)


@pytest.mark.parametrize("feature", ["linear", "sqexp"])
def test_all_kept_and_none_removed_is_the_identity(feature):
    neutral, positive, negative = planted()
    sea = fit_sea(neutral, positive, neutral, negative, feature=feature, keep_k=D, remove_k=0)
    h = torch.randn(6, D) * 2
    assert torch.allclose(sea(h), h, atol=1e-5)


def test_sqexp_inverse_recovers_signed_values_and_the_counts_follow_the_spectrum():
    x = torch.linspace(-4, 4, 17, dtype=torch.float64)
    assert torch.allclose(sqexp_inverse(sqexp(x, 1.5), torch.sign(x), 1.5), x, atol=1e-9)
    s = torch.tensor([3.0, 1.0, 0.0])  # energies 9, 1, 0: shares 0.9, 1.0, 1.0
    assert [n_leading(s, r, None) for r in (0.0, 0.5, 0.9, 0.95, 1.0)] == [0, 1, 1, 2, 2]
    assert n_leading(s, None, 3) == 3
    with pytest.raises(ConfigError):
        n_leading(s, 1.5, None)


def test_neutral_rows_pair_each_prompt_with_its_block_and_directions_swap_roles():
    assert neutral_rows(6, ["dss", "dso", "doo"]).tolist() == [2, 2, 2, 5, 5, 5]
    with pytest.raises(ConfigError, match="doo"):
        neutral_rows(6, ["dss", "dso"])
    neutral, positive, negative = planted(n=60)
    acts = torch.stack([negative, positive, neutral], 1).reshape(-1, D)  # blocks (context, memory, neutral)
    label = np.tile([1, 0, 0], 60)
    rows = neutral_rows(len(acts), ["dss", "dso", "doo"])
    label[2::3] = -1  # neutral rows that answered neither
    to_memory = fit_sea_direction(acts, label, rows, "memory", keep_k=1, remove_k=1)
    to_context = fit_sea_direction(acts, label, rows, "context", keep_k=1, remove_k=1)
    assert abs(to_memory.keep_basis[0, 0]) > 0.99 and abs(to_memory.remove_basis[1, 0]) > 0.99
    assert abs(to_context.keep_basis[1, 0]) > 0.99 and abs(to_context.remove_basis[0, 0]) > 0.99


def test_sea_applied_through_the_hook_changes_only_the_last_prompt_position(tiny_lm):
    model, _ = tiny_lm
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    neutral = torch.randn(50, d, generator=g)
    sea = fit_sea(neutral, neutral @ torch.randn(d, d, generator=g), neutral, neutral, keep_k=4, remove_k=4)
    ids = torch.randint(4, 20, (2, 7), generator=g)
    capture = Capture(model, [2], last=False)
    with torch.no_grad(), capture:
        plain = model(input_ids=ids).logits
    with torch.no_grad(), edit(model, {1: sea}):
        steered = model(input_ids=ids).logits
    assert torch.equal(plain[:, :-1], steered[:, :-1]) and not torch.allclose(plain[:, -1], steered[:, -1])


PROMPTS = ["c s1 e0 r0 v3 ; e1 r1 v2 ; q e0 r0 ?", "q e1 r1 ?", "c s2 e1 r0 v1 ; q e1 r0 ?"]


@pytest.mark.parametrize("bucket", ["low", "high", [0, 1, 2]])
def test_dola_without_the_premature_term_is_greedy_decoding(tiny_lm, bucket):
    model, tokenizer = tiny_lm
    greedy = generate(model, tokenizer, PROMPTS, max_new_tokens=4)
    assert dola_generate(model, tokenizer, PROMPTS, contrast=0.0, bucket=bucket, max_new_tokens=4) == greedy


def test_early_exit_of_the_last_block_gives_the_model_logits(tiny_lm):
    model, tokenizer = tiny_lm
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    capture = Capture(model, [model.config.num_hidden_layers - 1])
    with torch.no_grad(), capture:
        logits = model(input_ids=ids).logits[:, -1]
    (last,) = capture.result().values()
    with torch.no_grad():
        assert torch.allclose(early_exit_logits(model, last), logits, atol=1e-5)


def test_buckets_follow_the_depth_and_tied_embeddings(tiny_lm):
    model, _ = tiny_lm
    assert candidate_layers(model, "low") == [0] and candidate_layers(model, "high") == [1]
    deep = type("Deep", (), {})()
    deep.model = type("Inner", (), {"layers": [None] * 32})()
    deep.config = type("Cfg", (), {"tie_word_embeddings": True})()
    assert candidate_layers(deep, "low") == [2, 4, 6, 8, 10, 12, 14]
    assert candidate_layers(deep, "high") == list(range(16, 32, 2))
    with pytest.raises(ConfigError):
        candidate_layers(model, [5])


def test_jsd_picks_the_planted_most_divergent_layer():
    g = torch.Generator().manual_seed(0)
    mature = torch.randn(3, 20, generator=g).log_softmax(-1)
    mature[2] = torch.tensor([8.0] + [0.0] * 19).log_softmax(-1)
    candidates = torch.stack([(mature + 0.1 * torch.randn(3, 20, generator=g)).log_softmax(-1) for _ in range(4)])
    candidates[2, 0] = (-mature[0]).log_softmax(-1)  # row 0: layer 2 reverses the final ranking
    candidates[1, 2] = torch.full((20,), -np.log(20.0))  # row 2: layer 1 uniform, far from a peaked row
    _, chosen = dola_scores(mature, candidates, contrast=1.0)
    assert chosen.tolist()[0] == 2 and chosen.tolist()[2] == 1
    p, q = mature[0].exp().numpy(), candidates[2, 0].exp().numpy()
    assert np.isclose(jensen_shannon(mature[0], candidates[2, 0]).item(), jensenshannon(p, q) ** 2, atol=1e-6)


def test_plausibility_mask_excludes_tokens_below_alpha_times_max():
    logp = torch.tensor([[0.5, 0.3, 0.04, 0.16]]).log()
    assert plausible(logp, 0.1).tolist() == [[True, True, False, True]]
    premature = torch.tensor([[[0.1, 0.6, 0.0001, 0.2999]]]).log()  # would favour token 2 most
    scores, _ = dola_scores(logp, premature, contrast=1.0, plausibility=0.1)
    assert scores[0, 2] == float("-inf") and torch.isfinite(scores[0, [0, 1, 3]]).all()
    assert torch.allclose(scores[0, [0, 1, 3]], (logp - premature[0])[0, [0, 1, 3]])
    assert scores.argmax().item() == 0
