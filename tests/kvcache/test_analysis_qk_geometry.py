"""Q-Filters geometry (thesis Hypotheses 4.2.2-4.2.3, Figs. 4.30, 4.40): a planted dominant direction is
found with the thesis's sign rule, explains most of the energy, and only the first SVD component has a
non-zero mean projection, and v_1^+ from the float64 SVD is oriented as `qfilters.dominant_direction`
orients it; key statistics agree with a direct computation on the tiny Llama; calibrating chunk by chunk
gives the filters of one batch of all chunks."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from thesis.kvcache.analysis.capture import forward_layers
from thesis.kvcache.analysis.qk_geometry import head_geometry, key_statistics
from thesis.kvcache.mini.correlation import attention_received
from thesis.kvcache.qfilters import dominant_direction


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_planted_direction_components_and_sign(sign):
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    queries = sign * 4 * direction + 0.5 * torch.randn(2000, 16, generator=generator)
    found = head_geometry(queries, "sum")
    assert torch.nn.functional.cosine_similarity(found["direction"].float(), sign * direction, dim=0) > 0.99
    assert found["kappa"] > 0 and found["query_positive_fraction"] > 0.99
    # energy on v_1: 4^2 + 0.5^2 of 4^2 + 16 x 0.5^2 in all
    assert found["explained_first"].item() == pytest.approx(16.25 / 20, abs=0.01)
    assert found["component_abs_mean"][0] > 3.5 and found["component_abs_mean"][1:].max() < 0.1


def test_sum_sign_rule_matches_numpy_svd():
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(300, 8, generator=generator) + torch.linspace(-1, 1, 8)
    u, _, vt = np.linalg.svd(queries.double().numpy(), full_matrices=False)
    expected = np.sign(u[:, 0].sum()) * vt[0]
    assert np.allclose(head_geometry(queries, "sum")["direction"].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("sign_rule", ["sum", "majority"])
def test_direction_is_oriented_as_the_press_calibration_orients_it(sign_rule):
    generator = torch.Generator().manual_seed(3)
    for shift in (-0.3, 0.3):
        queries = torch.randn(500, 8, generator=generator) + shift * torch.linspace(0, 1, 8)
        found = head_geometry(queries, sign_rule)["direction"]
        assert found.dtype == torch.float64
        assert torch.allclose(found.float(), dominant_direction(queries, sign_rule), atol=1e-4)


def test_key_statistics_match_a_direct_computation(tiny_llama, prompt):
    chunks = prompt[:, :24]
    directions = torch.nn.functional.normalize(torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    found = key_statistics(tiny_llama, chunks, directions.double())
    layer = forward_layers(tiny_llama, chunks)[1]
    keys = layer.keys[0].double()  # (kv_heads, n, d); head 3 reads KV head 1
    projection = keys[1] @ directions[1, 3].double()
    side = np.sign(projection.mean().item())
    assert found["key_mean_projection"][1, 3].item() == pytest.approx(projection.mean().item(), abs=1e-9)
    assert found["key_sign_consistency"][1, 3].item() == pytest.approx((np.sign(projection.numpy()) == side).mean())
    received = attention_received(layer.attention()[0, 3].double()).numpy()
    assert found["rho_knorm"][1, 3].item() == pytest.approx(spearmanr(-keys[1].norm(dim=-1).numpy(), received)[0], abs=1e-9)
    group_filter = directions[1, 2:4].double().mean(0)
    assert found["rho_qfilters"][1, 3].item() == pytest.approx(spearmanr((keys[1] @ group_filter).numpy(), received)[0],
                                                               abs=1e-9)
