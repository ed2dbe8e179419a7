"""A-ViT baseline (spec ch2_acm B.4-B.5): ACT bookkeeping, masked training path vs token dropping
at inference, FLOPs from the tokens alive in every block, and the ponder and prior losses."""

import copy

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from thesis.acm.avit import (
    AViT,
    AViTModule,
    HaltingState,
    block_flops,
    distribution_prior_loss,
    evaluate,
)
from thesis.core.flops import FlopCounter, count_flops

DEPTH, TOKENS = 4, 17  # 16 patches + class token
NO_HALTING = dict(gate_center=1e4, init_bias=False)  # h = sigmoid(10 t - 1e4) = 0
PARTIAL_HALTING = dict(gate_scale=1.0, gate_center=0.5, init_bias=False)  # h ~ 0.2-0.6: varied depths
EARLY_HALTING = dict(gate_center=-1e4, init_bias=False)  # h = 1: every patch halts after block 0


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, in_chans=1,
                             embed_dim=48, depth=DEPTH, num_heads=3, num_classes=10).eval()


def avit(**gates) -> AViT:
    return AViT(tiny_vit(), target_depth=2, **gates).eval()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(6, 1, 16, 16)


@pytest.fixture
def loader(images) -> DataLoader:
    return DataLoader(TensorDataset(images, torch.randint(0, 10, (6,))), batch_size=4)


def test_act_step_by_hand():
    """Token a: h = 0.3, 0.5, 0.4 -> halts in block 3 with r = 0.2, rho = 3.2. Token b: h = 0.1
    each -> runs all 4 blocks (h := 1 in the last), r = 0.7, rho = 4.7."""
    states = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 1, 2, 1)  # block l outputs l + 1
    scores = torch.tensor([[0.3, 0.1], [0.5, 0.1], [0.4, 0.1], [0.9, 0.1]]).view(4, 1, 2)
    state = HaltingState.start(states[0])
    for l in range(4):
        state.step(states[l], scores[l], eps=0.01, final=l == 3)
    assert state.depth.tolist() == [[3.0, 4.0]]
    assert torch.allclose(state.rho, torch.tensor([[3.2, 4.7]]))
    expected = torch.tensor([0.3 * 1 + 0.5 * 2 + 0.2 * 3, 0.1 * (1 + 2 + 3) + 0.7 * 4])
    assert torch.allclose(state.output.view(2), expected)
    assert not state.alive.any()


def test_without_halting_it_is_the_plain_vit(images):
    model = avit(**NO_HALTING)
    plain = tiny_vit()(images)
    out = model(images)
    logits, counts = model.infer(images)
    assert torch.allclose(out.logits, plain, atol=1e-6) and torch.allclose(logits, plain, atol=1e-6)
    assert (counts == TOKENS).all()
    assert torch.equal(out.depth, torch.full_like(out.depth, DEPTH))


def test_dropping_tokens_gives_the_masked_training_output(images):
    model = avit(**PARTIAL_HALTING)
    out = model(images)
    logits, counts = model.infer(images)
    assert torch.equal(counts, out.tokens_per_block)
    assert (counts[:, -1] < TOKENS).all() and len(set(counts[:, -1].tolist())) > 1  # varied, real halting
    assert torch.allclose(logits, out.logits, atol=1e-5)


def test_class_token_never_halts(images):
    _, counts = avit(**EARLY_HALTING).infer(images)
    assert counts.tolist() == [[TOKENS, 1, 1, 1]] * len(images)


def test_block_flops_match_the_counter_on_short_sequences():
    block = tiny_vit().blocks[0]
    x = torch.randn(1, TOKENS, 48)
    for n in (1, 2, 9, TOKENS):
        assert int(block_flops(block, torch.tensor(n))) == count_flops(block, x[:, :n]).total


def test_analytic_flops_are_what_inference_runs(images):
    model = avit(**PARTIAL_HALTING)
    with FlopCounter(model) as counter:
        _, counts = model.infer(images)
    report = count_flops(model.vit, images[:1])
    constant = report.total - report.under("blocks")
    analytic = sum(int(block_flops(b, counts[:, l]).sum()) for l, b in enumerate(model.vit.blocks))
    assert counter.report.total == analytic + constant * len(images)


def test_flops_fall_when_tokens_halt_earlier(loader):
    dense = count_flops(tiny_vit(), loader.dataset.tensors[0][:1]).total
    rows = [evaluate(avit(**gates), loader)[0] for gates in (NO_HALTING, PARTIAL_HALTING, EARLY_HALTING)]
    flops = [r["flops"] for r in rows]
    assert flops[0] == pytest.approx(dense)
    assert flops[0] > flops[1] > flops[2]
    assert [r["mean_depth"] for r in rows][::2] == [DEPTH, 1]
    assert rows[0]["setting"] == "depth=2" and rows[0]["method"] == "avit"


def test_code_bias_init_halts_tokens_mid_network(images):
    model = AViT(tiny_vit(), target_depth=2).eval()  # gate_scale 10, gate_center 75
    biases = [float(b.mlp.fc2.bias[0].detach()) for b in model.vit.blocks]
    assert biases == pytest.approx([-75.0, -37.5, 250.0, 187.5])
    _, counts = model.infer(images)
    assert counts.tolist() == [[TOKENS, TOKENS, TOKENS, 1]] * len(images)


def test_prior_prefers_the_target_depth():
    peaked = lambda d: torch.softmax(-3 * (torch.arange(1.0, 13.0) - d) ** 2, 0)  # noqa: E731
    at_target, elsewhere = distribution_prior_loss(peaked(6), 6), distribution_prior_loss(peaked(10), 6)
    assert 0 <= at_target < elsewhere


def test_losses_are_finite_and_reach_the_halting_channel(images):
    model = avit(**PARTIAL_HALTING).train()
    module = AViTModule(model)
    loss, logits, extra = module.loss_and_logits((images, torch.randint(0, 10, (6,))))
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in extra.values())
    halting_terms = module.ponder_weight * extra["ponder_loss"] + module.prior_weight * extra["prior_loss"]
    halting_terms.backward(retain_graph=True)
    assert model.vit.blocks[0].mlp.fc2.bias.grad[0] != 0  # halting scores read channel 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_lightning_training_runs(loader):
    module = AViTModule(avit(**PARTIAL_HALTING).train(), cosine=False)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    before = copy.deepcopy(module.model.state_dict())
    trainer.fit(module, loader)
    assert any(not torch.equal(v, module.model.state_dict()[k]) for k, v in before.items())
