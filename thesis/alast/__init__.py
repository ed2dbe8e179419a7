"""ALaST (thesis Sec. 3.2): adaptive layer and token selection for fine-tuning vision transformers."""

from thesis.alast.budget import LayerBudgets, kept_tokens
from thesis.alast.schedules import ALaSTSchedule, Schedule, StaticSchedule, sample_layers
from thesis.alast.vit import ForwardRecord, SelectiveViT, StepPlan

__all__ = ["ALaSTSchedule", "ForwardRecord", "LayerBudgets", "Schedule", "SelectiveViT", "StaticSchedule",
           "StepPlan", "kept_tokens", "sample_layers"]
