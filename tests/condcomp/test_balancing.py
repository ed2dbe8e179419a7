import torch

from thesis.condcomp import bpr_keep, importance_cv2, route_topk, router_z_loss, switch_aux

N_TOK, N_EXP = 64, 4


def _uniform_probs() -> torch.Tensor:
    return torch.full((N_TOK, N_EXP), 1 / N_EXP)


def _skewed_probs() -> torch.Tensor:
    logits = torch.zeros(N_TOK, N_EXP)
    logits[:, 0] = 3.0
    return logits.softmax(-1)


def _balanced_top1() -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(N_TOK) % N_EXP, N_EXP).bool()


def test_importance_cv2_zero_at_uniform_and_positive_when_skewed():
    assert importance_cv2(_uniform_probs()).item() == 0.0
    assert importance_cv2(_skewed_probs()).item() > 0.5
    assert importance_cv2(_skewed_probs(), weight=0.1) == 0.1 * importance_cv2(_skewed_probs())


def test_switch_aux_equals_alpha_at_uniform_and_grows_when_skewed():
    alpha = 0.01
    uniform = switch_aux(_uniform_probs(), _balanced_top1(), alpha=alpha)
    assert torch.isclose(uniform, torch.tensor(alpha))
    assert torch.isclose(switch_aux(_uniform_probs(), alpha=alpha), torch.tensor(alpha))  # any f when P uniform
    skewed = switch_aux(_skewed_probs(), alpha=alpha)  # top-1 of every token = expert 0
    assert skewed > uniform
    assert torch.isclose(skewed, torch.tensor(alpha * N_EXP * _skewed_probs()[0, 0].item()))


def test_balancing_losses_minimised_at_uniform_over_random_routers():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        probs = (torch.randn(N_TOK, N_EXP, generator=gen) * 2 + torch.randn(N_EXP, generator=gen)).softmax(-1)
        assert importance_cv2(probs) > importance_cv2(_uniform_probs())
        # Decisive routers (P = f): n Σ f_i² >= 1 by Cauchy-Schwarz, equality only when balanced.
        hard = torch.nn.functional.one_hot(torch.randint(0, N_EXP, (N_TOK,), generator=gen), N_EXP).float()
        assert switch_aux(hard, alpha=1.0) >= 1.0
    assert torch.isclose(switch_aux(_balanced_top1().float(), alpha=1.0), torch.tensor(1.0))


def test_router_z_loss_matches_definition_and_penalises_large_logits():
    logits = torch.randn(10, 5, generator=torch.Generator().manual_seed(1))
    assert torch.isclose(router_z_loss(logits), (logits.exp().sum(-1).log() ** 2).mean())
    assert router_z_loss(10 * logits) > router_z_loss(logits)


def test_bpr_keeps_capacity_and_prioritises_confident_tokens():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    dispatch, combine = route_topk(logits, 1)
    capacity = 6
    keep = bpr_keep(dispatch, combine, capacity)
    assert torch.all(keep <= dispatch)
    priority = combine.max(-1).values
    for e in range(4):
        routed = dispatch[:, e]
        assert keep[:, e].sum() == min(capacity, int(routed.sum()))
        kept, dropped = priority[keep[:, e]], priority[routed & ~keep[:, e]]
        if dropped.numel():
            assert kept.min() >= dropped.max()


def test_bpr_serves_first_choices_before_second_choices():
    # Token 0 is the most confident but expert 1 is only its second choice; token 2 picks expert 1 first.
    combine = torch.tensor([[0.6, 0.35, 0.05], [0.5, 0.0, 0.5], [0.1, 0.4, 0.0]])
    dispatch = combine > 0.3
    keep = bpr_keep(dispatch, combine, capacity=1)
    assert keep[2, 1] and not keep[0, 1]
    assert keep[0, 0] and not keep[1, 0] and keep[1, 2]
