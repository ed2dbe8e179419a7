"""Training and evaluation of the MobileNetV3 DJSCC baselines, shared by the semcom experiments.

The baselines follow the ViT AE's recipe (Sec. 3.3.6): the classifier is first trained with
cross-entropy (`method.pretrain`), then the compressors of every r in `method.djscc.ratios` are
attached at the split and the whole DJSCC model is fine-tuned (`method.djscc`; one r drawn per
batch, robust: per-sample SNR ~ U(train_snr), noiseless: no noise). Stages are cached like the
ViT ones (`pipeline.stage_dir`), keyed by `method.mnv3` as well.
The evaluation grid has one configuration per r (no token budget: alpha = 1) and gives the
per-image correctness and rho = H * W * o_r / p that the curves and the controller read.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from thesis.core.errors import ConfigError
from thesis.core.seeding import seed_everything
from thesis.core.train import fit
from thesis.semcom.evaluate import Grid, first_images, input_size
from thesis.semcom.lightning import REGIMES, LinkStageModule
from thesis.semcom.mobilenet import CODECS, FeatureLink, SplitMobileNet, packet_positions
from thesis.semcom.packet import compression_factor, packet_symbols
from thesis.semcom.pipeline import WEIGHTS, restore_trained, stage_dir

log = logging.getLogger(__name__)

#: pipeline name -> (codec kind, training regime); the controller's label per codec kind
PIPELINES = {f"mnv3{kind if kind == 'cnn' else ''}_{regime}": (kind, regime) for kind in CODECS for regime in REGIMES}
LABELS = {"cnn": "MNV3 CNN", "mlp": "MNV3"}


def pipelines(kinds) -> dict[str, tuple[str, str]]:
    """The MobileNetV3 pipelines of the configured codec kinds."""
    unknown = sorted(set(kinds) - set(CODECS))
    if unknown:
        raise ConfigError(f"method.mnv3.codecs names {unknown}; valid codecs: {', '.join(CODECS)}")
    return {name: spec for name, spec in PIPELINES.items() if spec[0] in kinds}


class Mnv3Module(LinkStageModule):
    """Cross-entropy training of a split MobileNetV3, through the link when one is attached."""

    def __init__(self, model: SplitMobileNet, lr: float = 1e-3, weight_decay: float = 0.0, regime: str = "robust",
                 train_snr: tuple[float, float] = (-20.0, 20.0), freeze_backbone: bool = False):
        super().__init__(model, regime, train_snr, freeze_backbone, lr=lr, weight_decay=weight_decay)

    def backbone(self):
        return self.model.net  # frozen: batch-norm statistics stay as trained

    def loss_and_logits(self, batch):
        images, labels = batch
        model: SplitMobileNet = self.model
        ratio, snr = None, None
        if model.link is not None:
            ratios = model.link.ratios
            ratio = max(ratios) if not self.training else ratios[int(torch.randint(len(ratios), ()))]
            if self.training and self.regime == "robust":
                snr = torch.empty(len(images), device=self.device).uniform_(*self.train_snr)
        logits, _ = model(images, ratio, snr)
        return F.cross_entropy(logits, labels), logits, {}


class MobileNetStages:
    """The trained MobileNetV3 classifier and its DJSCC pipelines, built on first request."""

    def __init__(self, cfg: DictConfig, datamodule):
        self.cfg, self.data = cfg, datamodule
        self.settings = cfg.method.mnv3
        self._memo: dict[tuple, SplitMobileNet] = {}

    def build(self, kind: str | None) -> SplitMobileNet:
        model = SplitMobileNet(instantiate(self.settings.model, num_classes=self.data.num_classes),
                               split=self.settings.split)
        if kind is not None:
            dj = self.cfg.method.djscc
            model.attach_link(FeatureLink(model.channels, dj.ratios, kind, dj.layers, dj.normalize))
        return model

    def _train(self, model: SplitMobileNet, stages, stage: str, settings: DictConfig, **module_args) -> None:
        seed_everything(self.cfg.seed)
        module = Mnv3Module(model, lr=settings.lr, weight_decay=settings.weight_decay, **module_args)
        result = fit(module, self.data, self.cfg, stages, stage=stage, test=False, max_epochs=settings.epochs,
                     limit_val_batches=0, reload_dataloaders_every_n_epochs=1)
        stages.write_metrics(result)
        torch.save(model.state_dict(), stages.path / WEIGHTS)

    def backbone(self) -> SplitMobileNet:
        key = ("backbone",)
        if key not in self._memo:
            model = self.build(None)
            stages = stage_dir(self.cfg, "mnv3_backbone", {"mnv3": self.settings, "pretrain": self.cfg.method.pretrain})
            if not restore_trained(self.cfg, stages, model):
                log.info("training the MobileNetV3 backbone")
                self._train(model, stages, "mnv3_backbone", self.cfg.method.pretrain)
            self._memo[key] = model.eval()
        return self._memo[key]

    def djscc(self, kind: str, regime: str) -> SplitMobileNet:
        key = ("djscc", kind, regime)
        if key not in self._memo:
            cfg, dj = self.cfg, self.cfg.method.djscc
            model = self.build(kind)
            stages = stage_dir(cfg, f"mnv3_{kind}_{regime}", {"mnv3": self.settings, "pretrain": cfg.method.pretrain,
                                                              "djscc": dj, "kind": kind, "regime": regime})
            if not restore_trained(cfg, stages, model):
                model.load_state_dict(self.backbone().state_dict(), strict=False)
                log.info("training the MobileNetV3 %s DJSCC pipeline (%s)", kind, regime)
                self._train(model, stages, f"mnv3_{kind}_{regime}", dj, regime=regime, train_snr=dj.train_snr,
                            freeze_backbone=dj.freeze_backbone)
            self._memo[key] = model.eval()
        return self._memo[key]


@torch.no_grad()
def evaluate_split_grid(model: SplitMobileNet, loader: DataLoader, ratios, snrs, seed: int = 0,
                        limit: int | None = None, desc: str = "grid") -> Grid:
    """Correctness of every image for every r and grid SNR (None = no noise); configs are (1, r)."""
    model.eval()
    configs = [(1.0, float(r)) for r in ratios]
    correct, rho = [], []
    for b, images, labels in first_images(loader, limit, desc):
        features = model.device(images)
        positions = torch.full((len(images),), packet_positions(features))
        c_batch = np.zeros((len(images), len(configs), len(snrs)), dtype=bool)
        r_batch = np.zeros((len(images), len(configs)))
        for c, (_, ratio) in enumerate(configs):
            symbols = packet_symbols(positions, ratio, model.channels)
            r_batch[:, c] = compression_factor(symbols, input_size(images)).numpy()
            for si, snr in enumerate(snrs):
                torch.manual_seed(hash((seed, b, c, si)) % (2**31))
                noise = None if snr is None else torch.full((len(images),), float(snr))
                received, _ = model.link(features, ratio, noise)
                c_batch[:, c, si] = (model.server(received).argmax(-1) == labels).numpy()
        correct.append(c_batch)
        rho.append(r_batch)
    rho_all = np.concatenate(rho)
    return Grid(np.concatenate(correct), rho_all, np.ones_like(rho_all), configs, list(snrs))
