"""ACM-ized Wav2Vec2 (thesis Sec. 3.1, speech): conversion, equal cost, the three stages and CTC."""

import copy

import lightning as L
import pytest
import torch

from thesis.acm.convert import acms, set_forced_learners
from thesis.acm.stages import DistillationModule, GatePretrainModule, TargetRecorder
from thesis.acm.wav2vec import (
    ACMCTCModule,
    CTCModule,
    acmize_wav2vec2,
    ctc_loss,
    frame_lengths,
    full_cost_ratio,
    greedy_decode,
    load_wav2vec2_ctc,
)
from thesis.core import fixtures
from thesis.core.flops import count_flops
from thesis.core.speech import CommonVoiceDataModule

PATHS = ["wav2vec2.encoder.layers.0.feed_forward", "wav2vec2.encoder.layers.1.feed_forward"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny shapes gain nothing from intra-op threads, and on a busy 2-core box two spinning
    threads make every step about 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    return fixtures.materialize("commonvoice_tiny", root), fixtures.materialize("hf_wav2vec2_tiny", root)


@pytest.fixture(scope="module")
def data(folders):
    corpus, checkpoint = folders
    datamodule = CommonVoiceDataModule(str(corpus), str(checkpoint), batch_size=4)
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def batch(data):
    return next(iter(data.train_dataloader()))


@pytest.fixture(scope="module")
def audio(batch):
    """Half a second of every clip: enough frames for the module-wise stages, and quick."""
    return batch.input_values[:, :8000]


@pytest.fixture
def pair(folders):
    base = load_wav2vec2_ctc(folders[1]).eval()
    converted = copy.deepcopy(base)
    return base, converted, acmize_wav2vec2(converted)


def test_fixture_loads_back_through_transformers(folders):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(folders[1])
    model = Wav2Vec2ForCTC.from_pretrained(folders[1])
    assert model.config.vocab_size == len(processor.tokenizer)
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id  # the CTC blank
    ids = processor.tokenizer("hola señor").input_ids
    assert processor.tokenizer.decode(ids) == "hola señor"
    audio = processor(torch.zeros(3200).numpy(), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        assert model(audio.input_values).logits.shape == (1, 79, len(processor.tokenizer))


def test_every_feed_forward_becomes_an_equal_cost_acm(pair):
    _, converted, replaced = pair
    assert list(replaced) == list(acms(converted)) == PATHS
    for original, acm in replaced.values():
        assert type(original).__name__ == "Wav2Vec2FeedForward"
        assert (acm.num_learners, acm.min_choice, acm.num_choices, acm.d_in, acm.d_out) == (4, 0, 5, 32, 32)
        assert acm.learners[0][0].out_features == 16  # d_ff / N
        assert full_cost_ratio(original, acm) == 1.0


def test_all_learners_cost_what_the_dense_model_costs(pair, batch):
    base, converted, _ = pair
    x = batch.input_values[:1]
    set_forced_learners(converted, 4)
    dense, acm = count_flops(base, x), count_flops(converted.eval(), x)
    assert acm.total == dense.total
    for path in PATHS:
        assert acm.under(path) == dense.under(path) > 0


def test_acm_model_runs_in_train_and_eval(pair, batch):
    base, converted, _ = pair
    x, mask = batch.input_values[:, :8000], batch.attention_mask[:, :8000]
    shape = base(x, attention_mask=mask).logits.shape
    for mode in (True, False):
        out = converted.train(mode)(x, attention_mask=mask).logits
        assert out.shape == shape and torch.isfinite(out).all()


def test_recorder_reads_the_feed_forwards(pair, audio):
    base, converted, _ = pair
    records = TargetRecorder(base, acms(converted))(audio)
    assert list(records) == PATHS
    for path in PATHS:
        z, o = records[path]
        assert z.shape[-1] == 32 and z.shape[:2] == o.shape[:2]
        assert torch.allclose(o, base.get_submodule(path)(z))


def test_stage_one_distils_the_feed_forwards(pair, audio):
    base, converted, _ = pair
    stage = DistillationModule(base, converted, lr=1e-2)
    optimizer = stage.configure_optimizers()
    first = stage._mean_loss((audio,)).item()
    for _ in range(10):
        optimizer.zero_grad()
        stage._mean_loss((audio,)).backward()
        optimizer.step()
    assert stage._mean_loss((audio,)).item() < 0.5 * first


def test_stage_two_labels_frames(pair, audio):
    base, converted, _ = pair
    stage = GatePretrainModule(base, converted)
    z, o = TargetRecorder(base, acms(converted))(audio)[PATHS[0]]
    labels = stage.labels(acms(converted)[PATHS[0]], z, o)
    assert labels.shape == z.shape[:-1] and 0 <= labels.min() and labels.max() <= 4
    assert torch.isfinite(stage._mean_loss((audio,)))


def test_ctc_loss_matches_transformers(pair, batch):
    base, _, _ = pair
    out = base(batch.input_values, attention_mask=batch.attention_mask, labels=batch.labels)
    lengths = frame_lengths(base, batch.attention_mask)
    assert torch.allclose(ctc_loss(out.logits, batch.labels, lengths, base.config.pad_token_id), out.loss)


def test_greedy_decode_merges_repeats_and_drops_blanks(data):
    tokenizer = data.processor.tokenizer
    frames = ["h", "h", "<pad>", "e", "l", "l", "<pad>", "l", "o", "|", "|", "s", "í", "í"]
    ids = tokenizer.convert_tokens_to_ids(frames + ["x", "x"])  # the last two frames are padding
    logits = torch.nn.functional.one_hot(torch.tensor([ids]), len(tokenizer)).float()
    assert greedy_decode(logits, torch.tensor([len(frames)]), tokenizer) == ["hello sí"]


def test_stage_three_ctc_and_compute_losses_reach_the_gates(pair, batch, data):
    _, converted, _ = pair
    module = ACMCTCModule(converted.train(), data.processor.tokenizer, beta_target=0.25)
    loss, logits, extra = module.loss_and_logits(batch)
    assert torch.isfinite(loss) and torch.isfinite(extra["task_loss"])
    assert 0 <= extra["compute"].item() <= 1
    loss.backward()
    for acm in acms(converted).values():
        assert acm.gate[0].weight.grad is not None and acm.gate[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in converted.wav2vec2.feature_extractor.parameters())  # frozen


def test_compute_fraction_counts_real_frames_only(pair, batch, data):
    _, converted, _ = pair
    module = ACMCTCModule(converted.eval(), data.processor.tokenizer, beta_target=0.5)
    set_forced_learners(converted, 2)
    _, logits, extra = module.loss_and_logits(batch)
    assert extra["compute"].item() == pytest.approx(0.5)  # padded frames would pull it below


def test_ctc_module_reports_wer_and_cer(folders, data):
    torch.manual_seed(0)
    module = CTCModule(load_wav2vec2_ctc(folders[1]), data.processor.tokenizer)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert {"val/loss", "val/wer", "val/cer"} <= set(metrics)
    assert metrics["val/wer"] >= 0 and metrics["val/cer"] > 0


def test_stages_fit_on_speech_batches_through_lightning(pair, data):
    base, converted, _ = pair
    kwargs = dict(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    L.Trainer(**kwargs).fit(DistillationModule(base, converted), datamodule=data)
    stage3 = ACMCTCModule(converted, data.processor.tokenizer, beta_target=0.25)
    L.Trainer(**kwargs).fit(stage3, datamodule=data)
    assert stage3.trainer.global_step == 2
