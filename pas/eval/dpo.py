"""DPO fine-tuning baseline (the paper's comparison), with TRL's ``DPOTrainer`` and peft LoRA.

Per subject, one preference pair per *fit* item (the same fit/validation split of the
known answers that PAS uses): prompt = the item prompt up to the pre-filled ``(``,
chosen = the letter of the subject's response (the item as worded), rejected = the letter the base model
itself ranks highest among the wrong ones (its most likely mistake: a hard negative,
which is what moves the argmax answer; the opposite end of the scale is rarely what the
model would say). The number of epochs is chosen on the validation items: the adapter
is scored after every epoch (and before training) and the best state is kept.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from pas.core.data import ItemBank, Subject
from pas.fit.optimize import split_known
from pas.score.metric import Objective, objective
from pas.score.prompts import LETTER_VALUES, LETTERS, PromptTemplate
from pas.score.scorer import ItemScorer

if TYPE_CHECKING:
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

ModelT = TypeVar("ModelT", bound="PreTrainedModel")


@dataclass(frozen=True)
class DPOSettings:
    """DPO baseline settings. ``full`` trains all weights instead of a LoRA adapter."""

    epochs: int = 2
    lr: float = 5e-4
    beta: float = 0.1
    batch_size: int = 8
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    full: bool = False
    val_fraction: float = 1 / 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.beta <= 0:
            raise ValueError(f"epochs, batch_size, lr, beta must be positive: {self}")


@dataclass
class DPOResult:
    # the fine-tuned model (a copy; the base model is untouched). With LoRA it is a PeftModel, which forwards every
    # attribute to the PreTrainedModel it wraps, and is used as one.
    model: PreTrainedModel
    best_epoch: int
    # (epoch, composite, expected, letter mass)
    val_trace: list[tuple[int, float, float, float]] = field(default_factory=list)
    fit_seconds: float = 0.0
    train_loss: float | None = None


def preference_pairs(scorer: ItemScorer, subject: Subject, ids: Sequence[int]) -> list[dict[str, str]]:
    """``{prompt, chosen, rejected}`` per item; rejected = the base model's top wrong letter."""
    probs = scorer.score(ids).probs
    pairs = []
    for item, p in zip(ids, probs, strict=True):
        right = LETTER_VALUES.index(subject.responses[item])
        wrong = max((k for k in range(5) if k != right), key=lambda k: p[k])
        pairs.append({"prompt": scorer.texts([item])[0], "chosen": LETTERS[right], "rejected": LETTERS[wrong]})
    return pairs


def _val_objective(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bank: ItemBank, subject: Subject,
                   val_ids: Sequence[int], template: PromptTemplate) -> Objective:
    model.eval()
    # a fresh scorer: encodings depend on the weights
    scores = ItemScorer(model, tokenizer, bank, template).score(val_ids)
    return objective(bank, subject, val_ids, scores)


def train_dpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, bank: ItemBank, subject: Subject,
              settings: DPOSettings | None = None, scorer: ItemScorer | None = None,
              progress: bool = False) -> DPOResult:
    """Fine-tune a copy of ``model`` on the subject's fit items; epochs chosen on validation items."""
    import datasets
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    settings = settings or DPOSettings()
    t0 = time.perf_counter()
    scorer = scorer or ItemScorer(model, tokenizer, bank)
    known = subject.responses_to(bank.train_ids)
    fit_ids, val_ids = split_known(bank, known, settings.val_fraction, settings.seed)
    train_set = datasets.Dataset.from_list(preference_pairs(scorer, subject, fit_ids))
    policy = copy.deepcopy(model)
    policy.requires_grad_(True)
    peft_config = None
    if not settings.full:
        from peft import LoraConfig

        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                 target_modules=list(settings.target_modules), task_type="CAUSAL_LM")
    best = _BestState()
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="pas-dpo-"), num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.lr, beta=settings.beta,
        lr_scheduler_type="constant", warmup_steps=0, save_strategy="no", report_to=[], logging_steps=1,
        seed=settings.seed, data_seed=settings.seed, use_cpu=not torch.cuda.is_available(),
        bf16=False, fp16=False, activation_checkpointing=False, precompute_ref_log_probs=True,
        disable_tqdm=not progress, dataloader_num_workers=0,
    )

    template = scorer.template

    class EpochEval(TrainerCallback):
        def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                         model: PreTrainedModel | None = None, **kwargs: Any) -> None:
            assert model is not None and state.epoch is not None  # the Trainer passes both at an epoch's end
            best.offer(int(round(state.epoch)), _val_objective(model, tokenizer, bank, subject, val_ids, template),
                       model)
            model.train()

    trainer = DPOTrainer(model=policy, args=config, train_dataset=train_set, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[EpochEval()])
    # the policy (with LoRA a PeftModel, used as the PreTrainedModel it wraps: see DPOResult.model)
    start = cast("PreTrainedModel", trainer.model)
    best.offer(0, _val_objective(start, tokenizer, bank, subject, val_ids, template), start)
    out = trainer.train()
    trained = cast("PreTrainedModel", trainer.model)
    best.restore(trained)
    trained.eval()
    trained.requires_grad_(False)
    return DPOResult(trained, best.epoch, best.trace, time.perf_counter() - t0, float(out.training_loss))


class _BestState:
    """Keeps the trainable weights of the best validation epoch."""

    def __init__(self) -> None:
        self.key: tuple[bool, float, float] | None = None
        self.epoch = 0
        self.weights: dict[str, torch.Tensor] | None = None
        self.trace: list[tuple[int, float, float, float]] = []

    def offer(self, epoch: int, result: Objective, model: torch.nn.Module) -> None:
        self.trace.append((epoch, result.composite, result.expected, result.letter_mass))
        if self.key is None or result.key < self.key:
            self.key, self.epoch = result.key, epoch
            self.weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    def restore(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in (self.weights or {}).items():
                params[k].copy_(v)


def save_adapter(result: DPOResult, path: str | Path) -> Path:
    """Save the LoRA adapter (or full weights) with ``save_pretrained`` (safetensors)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    result.model.save_pretrained(path, safe_serialization=True)
    return path


def load_adapter(model: ModelT, path: str | Path) -> ModelT:
    """A saved subject adapter on top of ``model`` (a copy), ready to score or chat."""
    from peft import PeftModel

    # a PeftModel forwards every attribute to the model it wraps, and is used as one (see DPOResult.model)
    return cast(ModelT, PeftModel.from_pretrained(copy.deepcopy(model), str(path)).eval())
