"""DVC stage `train_config`: what the train stage depends on, written so DVC can track it.

* ``results.dir/train_params.yaml``: the resolved train section (preset + params.yaml's overrides +
  defaults, model config included), git-tracked with every experiment:
  ``dvc params diff <a> <b> --targets results/train_params.yaml`` shows every hyper-parameter two runs
  differ in, also the ones a preset switch changed. (The train stage's own params are params.yaml's
  ``train`` section and ``presets/``, so that ``dvc exp show`` gets one column per changed key, not one
  per model setting a preset switch changed.)
* ``results.train_inputs``: for every shard train reads (its features and the labels, for every manifest
  video), what identifies its content. train depends on this file instead of the whole store, so
  re-extracting a feature it does not read, or re-writing identical shards, leaves train up to date.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from avpipe.pipeline.config.build import to_plain
from avpipe.pipeline.config.train import TrainConfig
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.results import shard_summary, write_train_inputs, write_train_params
from avpipe.pipeline.store import FeatureStore

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)


def run(params: Params) -> int:
    """The ``avpipe train-config`` command."""
    path = write_train_params(params.results, resolved_train(params.train))
    inputs = train_inputs(params)
    write_train_inputs(params.results.train_inputs, inputs)
    missing = sum(1 for shards in inputs["shards"].values() for s in shards.values() if s is None)
    log.info(
        "train config: %s; inputs: %d videos x %d extractors (%d shards missing) in %s",
        path,
        len(inputs["videos"]),
        len(inputs["shards"]),
        missing,
        params.results.train_inputs,
    )
    return 0


def resolved_train(train: TrainConfig) -> dict[str, Any]:
    """The train config as plain YAML values: features in their short form, the model's full config and
    the full options of every task's loss that has options."""
    import dataclasses

    from avpipe.models.losses import build_task_losses  # imports torch: only for this stage
    from avpipe.models.registry import validate_model_config

    plain = to_plain(train)
    assert isinstance(plain, dict)
    plain["features"] = [
        spec.key if spec.modality.value == "auto" else to_plain(spec) for spec in train.feature_specs
    ]
    plain["model"]["config"] = to_plain(validate_model_config(train.model.name, train.model.config))
    for loss in build_task_losses(train.tasks, train.loss).values():
        if dataclasses.fields(loss.config):
            plain["loss"]["options"][loss.name] = to_plain(loss.config)
    return plain


def train_inputs(params: Params) -> dict[str, Any]:
    """``{"videos": [...], "shards": {extractor: {video: summary or None}}}`` for train's extractors."""
    store = FeatureStore(params.store.root)
    videos = sorted(row.video_id for row in read_manifest(params.manifest.path))
    extractors = sorted({spec.extractor for spec in params.train.feature_specs} | {LABELS_EXTRACTOR})
    shards: dict[str, dict[str, Any]] = {}
    for extractor in extractors:
        shards[extractor] = {}
        for video_id in videos:
            path = store.shard_path(extractor, video_id)
            try:
                attrs = store.attrs(extractor, video_id)
            except StoreError:
                shards[extractor][video_id] = None  # train skips (and reports) such a video
                continue
            shards[extractor][video_id] = shard_summary(attrs, path.stat().st_size)
    return {"videos": videos, "shards": shards}
