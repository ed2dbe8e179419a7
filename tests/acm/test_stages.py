"""The three ACM stages: what each trains, what stage 1 and 2 regress, and stage 3's losses."""

import torch

from thesis.acm.convert import acms
from thesis.acm.stages import ACMTrainModule, DistillationModule, GatePretrainModule, TargetRecorder


def test_recorder_reads_the_original_modules(vit_pair):
    base, converted = vit_pair
    x = torch.rand(3, 1, 16, 16)
    records = TargetRecorder(base, acms(converted))(x)
    assert set(records) == set(acms(converted))
    z, o = records["blocks.1.attn.qkv.k"]
    assert torch.allclose(o, base.blocks[1].attn.qkv(z)[..., 16:32])
    z, o = records["blocks.0.mlp"]
    assert torch.allclose(o, base.blocks[0].mlp(z))


def test_stage_one_trains_learners_only_and_learns(vit_pair):
    base, converted = vit_pair
    stage = DistillationModule(base, converted, lr=1e-2)
    learner_ids = {id(p) for acm in acms(converted).values() for p in acm.learners.parameters()}
    assert {id(p) for p in stage.trainable()} == learner_ids
    optimizer = stage.configure_optimizers()
    x = torch.rand(8, 1, 16, 16)
    first = stage._mean_loss((x, None)).item()
    for _ in range(30):
        optimizer.zero_grad()
        stage._mean_loss((x, None)).backward()
        optimizer.step()
    assert stage._mean_loss((x, None)).item() < 0.5 * first
    assert not any(p.requires_grad for p in base.parameters())


def test_stage_two_trains_gates_on_labels(vit_pair):
    base, converted = vit_pair
    stage = GatePretrainModule(base, converted, lr=1e-2)
    ids = {id(p) for p in stage.trainable()}
    gate_ids = {id(p) for acm in acms(converted).values() for p in acm.gate.parameters()}
    assert ids == gate_ids
    assert not any(p.requires_grad for acm in acms(converted).values() for p in acm.learners.parameters())
    z, o = TargetRecorder(base, acms(converted))(torch.rand(2, 1, 16, 16))["blocks.0.mlp"]
    labels = stage.labels(acms(converted)["blocks.0.mlp"], z, o)
    assert labels.shape == z.shape[:-1] and labels.min() >= 0 and labels.max() <= 4


def test_stage_three_losses_and_budget(vit_pair):
    _, converted = vit_pair
    module = ACMTrainModule(converted.train(), beta_target=0.5)
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    loss, logits, extra = module.loss_and_logits((x, y))
    assert logits.shape == (4, 10) and torch.isfinite(loss)
    assert 0 <= extra["compute"].item() <= 1
    loss.backward()
    gate = acms(converted)["blocks.0.mlp"].gate[0].weight
    assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_stage3_gates_can_have_their_own_learning_rate():
    from thesis.acm.module import ACM

    model = torch.nn.Sequential(ACM(8, 8, num_learners=2, learner_hidden=4))
    module = ACMTrainModule(model, beta_target=0.5, lr=1e-4, gate_lr=1e-2, cosine=False)
    optimizer = module.configure_optimizers()
    rest, gates = optimizer.param_groups
    gate_params = {id(p) for m in acms(model).values() for p in m.gate.parameters()}
    assert {id(p) for p in gates["params"]} == gate_params and gates["lr"] == 1e-2
    assert gate_params.isdisjoint(id(p) for p in rest["params"]) and rest["lr"] == 1e-4
    assert len(rest["params"]) + len(gates["params"]) == len(list(model.parameters()))
    same = ACMTrainModule(model, beta_target=0.5, lr=1e-4, cosine=False).configure_optimizers()
    assert [g["lr"] for g in same.param_groups] == [1e-4, 1e-4]
