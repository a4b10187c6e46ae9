"""Training one fold: epochs over shuffled windows, validation every epoch, ReduceLROnPlateau on the
validation score, early stopping, the best epoch's weights kept (selection on validation CCC, or the
ABAW score of the trained tasks in multi-task runs)."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avpipe.models.base import InputSpec, SequenceModel
from avpipe.models.inference import VideoPrediction, predict_videos
from avpipe.models.losses import MultiTaskLoss
from avpipe.models.metrics import metrics_of_targets
from avpipe.models.registry import create_model
from avpipe.models.selection import Best, TaskScorer, restore_state, selection_criteria, warn_if_untrained
from avpipe.models.table import FrameTable, WindowBatches
from avpipe.models.tasks import BUILTIN, TaskSpec, as_specs, task_targets
from avpipe.pipeline.config.train import OptimizerName, Scheduler, Selection, Shuffle, TrainConfig
from avpipe.pipeline.labels import FrameLabels, TaskKind

log = logging.getLogger(__name__)

LOG_METRICS = ("ccc_valence", "ccc_arousal", "ccc_mean", "f1_expr", "f1_au", "score")


def log_metrics(tasks: Sequence[TaskSpec]) -> tuple[str, ...]:
    """The validation metrics of the per-epoch log: the built-in ones, and each declared task's score
    (and accuracy, for a categorical task)."""
    extra = []
    for task in tasks:
        if not task.builtin:
            extra.append(task.score_metric)
            if task.kind is TaskKind.CATEGORICAL:
                extra.append(f"accuracy_{task.name}")
    return (*LOG_METRICS[:-1], *extra, LOG_METRICS[-1])


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_score: float
    epochs_run: int
    seconds: float
    model: SequenceModel  # holding the best epoch's weights
    history: list[dict[str, float]] = field(default_factory=list)  # row 0: the untrained model
    baseline_score: float = math.nan  # the untrained model's validation score
    beat_untrained: bool = True
    dropped_tasks: list[str] = field(default_factory=list)  # tasks without a validation score (drop)
    # per_task selection: criterion name (avpipe.models.selection) -> its best epoch, score and weights
    task_best: dict[str, tuple[int, float, dict[str, Any]]] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # for libraries that use numpy's legacy global generator


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    opt = config.optimizer
    params = model.parameters()
    if opt.name is OptimizerName.SGD:
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    betas = (float(opt.betas[0]), float(opt.betas[1]))
    if opt.name is OptimizerName.ADAMW:
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay, betas=betas)
    return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay, betas=betas)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The epoch-wise schedule. ``linear_warmup`` is transformers' get_linear_schedule_with_warmup
    stepped once per epoch, as AIM3-RUC/ABAW4 (models/networks/tools.py:59-61, train_seed.py:272): epoch
    e (from 1) runs at lr * (e - 1) / warmup, then lr * (epochs - e + 1) / (epochs - warmup)."""
    if config.scheduler is Scheduler.PLATEAU:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.plateau.factor,
            patience=config.plateau.patience,
            min_lr=config.plateau.min_lr,
        )
    if config.scheduler is Scheduler.CONSTANT:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup, total = config.warmup_epochs, config.epochs

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def concat_labels(labels: Mapping[str, FrameLabels], video_ids: Sequence[str]) -> FrameLabels:
    """The built-in tasks' labels of ``video_ids`` end to end (``concat_targets`` has any task's)."""
    return FrameLabels(
        valence_arousal=np.concatenate([labels[v].valence_arousal for v in video_ids]),
        expression=np.concatenate([labels[v].expression for v in video_ids]),
        action_units=np.concatenate([labels[v].action_units for v in video_ids]),
    )


def concat_targets(
    labels: Mapping[str, FrameLabels], video_ids: Sequence[str], tasks: Sequence[TaskSpec]
) -> dict[str, np.ndarray]:
    return {spec.key: np.concatenate([task_targets(spec, labels[v]) for v in video_ids]) for spec in tasks}


def concat_predictions(
    predictions: Mapping[str, VideoPrediction], video_ids: Sequence[str]
) -> VideoPrediction:
    tasks = predictions[video_ids[0]].keys()
    return {task: np.concatenate([predictions[v][task] for v in video_ids]) for task in tasks}


def split_metrics(
    predictions: Mapping[str, VideoPrediction],
    labels: Mapping[str, FrameLabels],
    video_ids: Sequence[str],
    tasks: Sequence[TaskSpec] | None = None,
) -> dict[str, float]:
    """Metrics over all frames of ``video_ids`` together (``tasks`` default: the built-in ones predicted)."""
    predicted = concat_predictions(predictions, video_ids)
    specs = list(tasks) if tasks is not None else as_specs(k for k in predicted if k in BUILTIN)
    return metrics_of_targets(predicted, concat_targets(labels, video_ids, specs), specs)


class FoldTrainer:
    """Trains models of one configuration on windows of a FrameTable (already loaded once per run)."""

    def __init__(
        self,
        config: TrainConfig,
        inputs: Sequence[InputSpec],
        table: FrameTable,
        labels: Mapping[str, FrameLabels],
        device: torch.device,
        tasks: Sequence[TaskSpec] | None = None,
    ) -> None:
        """``tasks``: the resolved tasks (avpipe.models.tasks.resolve_tasks); default: ``train.tasks``,
        which must then name built-in tasks only."""
        self.config = config
        self.inputs = list(inputs)
        self.table = table
        self.labels = labels
        self.device = device
        self.tasks = list(tasks) if tasks is not None else as_specs(config.tasks or ["va"])
        self.loss = MultiTaskLoss(self.tasks, config.loss)
        self.targets = table.task_targets(self.tasks, labels)
        self.log_metrics = log_metrics(self.tasks)

    def build_model(self) -> SequenceModel:
        return create_model(
            self.config.model.name,
            inputs=self.inputs,
            tasks=self.tasks,
            window=self.config.window,
            separate_va=self.config.model.separate_va,
            **self.config.model.config,
        )

    def train_fold(
        self,
        fold: int,
        inputs: Mapping[str, np.ndarray],
        train_ids: Sequence[str],
        val_ids: Sequence[str],
        log_path: Path | None = None,
    ) -> FoldResult:
        """Train on ``train_ids``, select on ``val_ids``; ``inputs`` are standardised with train stats."""
        cfg = self.config
        seed_everything(cfg.seed + fold)
        started = time.perf_counter()
        windows, _ = self.table.windows(train_ids, cfg.window, cfg.hop)
        windows = windows[self.table.labeled_windows(windows, self.tasks, self.targets)]
        keys = [spec.key for spec in self.tasks]
        if windows.shape[0] == 0:
            raise ValueError(f"fold {fold}: the training videos have no labeled frame for {keys}")
        targets = self.targets
        every_epoch = cfg.shuffle is Shuffle.EVERY_EPOCH
        if not every_epoch:  # one order for the whole fold
            windows = windows[np.random.default_rng(cfg.seed + fold).permutation(windows.shape[0])]
        batches = WindowBatches(
            inputs, targets, windows, cfg.batch_size, shuffle=every_epoch, seed=cfg.seed + fold
        )
        model = self.build_model().to(self.device)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg)
        separate_va = cfg.model.separate_va
        scorer = TaskScorer(fold, self.tasks, cfg.selection.missing_score, separate_va)
        baseline_metrics = self.validate(model, inputs, val_ids)
        baseline = sum(scorer.scores(baseline_metrics, epoch=0).values())  # fails before any epoch is spent
        history: list[dict[str, float]] = [self._row(0, optimizer, {}, baseline_metrics, baseline, 0.0)]
        best = Best()
        per_task = cfg.selection.mode is Selection.PER_TASK
        criteria = selection_criteria(self.tasks, separate_va) if per_task else []
        task_best = {criterion.name: Best() for criterion in criteria}
        dims = {criterion.name: criterion.dim for criterion in criteria}
        stale = 0
        log.info("fold %d: %d training windows, %d validation videos", fold, windows.shape[0], len(val_ids))
        for epoch in range(1, cfg.epochs + 1):
            epoch_started = time.perf_counter()
            losses = self._train_epoch(model, optimizer, batches)
            metrics = self.validate(model, inputs, val_ids)
            scores = scorer.scores(metrics, epoch)
            score = sum(scores.values())
            if cfg.scheduler is Scheduler.PLATEAU:
                scheduler.step(score)
            else:
                scheduler.step()
            history.append(
                self._row(epoch, optimizer, losses, metrics, score, time.perf_counter() - epoch_started)
            )
            if log_path is not None:
                write_history(log_path, history)
            state = model.state_dict()
            improved = best.offer(epoch, score, state)
            for name, criterion_score in scores.items():
                if name in task_best:
                    improved = task_best[name].offer(epoch, criterion_score, state) or improved
            stale = 0 if improved else stale + 1
            if cfg.restore_best and not improved:  # ABAW2: continue from the best weights so far
                model.load_state_dict(restore_state(best, task_best, dims))
            log.info(
                "fold %d epoch %d/%d: loss %.4f, val score %.4f (best %.4f at %d), %.1fs",
                fold,
                epoch,
                cfg.epochs,
                losses["train_loss"],
                score,
                best.score,
                best.epoch,
                history[-1]["seconds"],
            )
            if stale > cfg.patience and epoch >= cfg.min_epochs:
                log.info("fold %d: early stop at epoch %d (best %d)", fold, epoch, best.epoch)
                break
        untrained = warn_if_untrained(fold, best, baseline)
        model.load_state_dict(best.state)
        seconds = time.perf_counter() - started
        log.info(
            "fold %d: best validation score %.4f at epoch %d (%.1fs)", fold, best.score, best.epoch, seconds
        )
        return FoldResult(
            fold,
            best.epoch,
            best.score,
            len(history) - 1,
            seconds,
            model,
            history,
            baseline_score=baseline,
            beat_untrained=not untrained,
            dropped_tasks=[task.value for task in scorer.dropped],
            task_best={name: (b.epoch, b.score, b.state) for name, b in task_best.items() if b.state},
        )

    def _row(
        self,
        epoch: int,
        optimizer: torch.optim.Optimizer,
        losses: Mapping[str, float],
        metrics: Mapping[str, float],
        score: float,
        seconds: float,
    ) -> dict[str, float]:
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **losses}
        row.update({f"val_{k}": metrics[k] for k in self.log_metrics if k in metrics})
        row["val_selection_score"] = score
        row["seconds"] = seconds
        return row

    def _train_epoch(
        self, model: SequenceModel, optimizer: torch.optim.Optimizer, batches: WindowBatches
    ) -> dict[str, float]:
        model.train()
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            batch = batch.to(self.device)
            optimizer.zero_grad(set_to_none=True)
            loss, parts = self.loss(model(batch.inputs, batch.valid), batch.targets)
            loss.backward()
            if self.config.optimizer.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.optimizer.grad_clip)
            optimizer.step()
            count += 1
            totals["train_loss"] = totals.get("train_loss", 0.0) + float(loss.detach())
            for task, value in parts.items():
                totals[f"train_loss_{task}"] = totals.get(f"train_loss_{task}", 0.0) + value
        return {name: value / max(count, 1) for name, value in totals.items()}

    def predict(
        self, model: SequenceModel, inputs: Mapping[str, np.ndarray], video_ids: Sequence[str]
    ) -> dict[str, VideoPrediction]:
        cfg = self.config
        return predict_videos(
            model, inputs, self.table, video_ids, cfg.window, cfg.hop, cfg.batch_size, self.device
        )

    def validate(
        self, model: SequenceModel, inputs: Mapping[str, np.ndarray], video_ids: Sequence[str]
    ) -> dict[str, float]:
        return split_metrics(self.predict(model, inputs, video_ids), self.labels, video_ids, self.tasks)


def write_history(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch log as CSV (rewritten whole each epoch: a crash leaves every finished epoch)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
