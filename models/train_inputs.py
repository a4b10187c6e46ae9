"""What the train stage depends on: the resolved train section and the identity of every shard it reads.

``avpipe train-config`` writes both (docs/TRAINING.md): the resolved section for
``dvc params diff --targets results/train_params.yaml``, the shard summaries so that train depends on the
shards it reads rather than on the whole store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avpipe.pipeline.config.build import to_plain
from avpipe.pipeline.config.train import TrainConfig
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.labels import LABELS_EXTRACTOR
from avpipe.pipeline.manifest import read_manifest
from avpipe.pipeline.results import shard_summary
from avpipe.pipeline.store import FeatureStore

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params


def resolved_train(train: TrainConfig) -> dict[str, Any]:
    """The train config as plain YAML values: features in their short form, the model's full config and
    the full options of every loss ``train.loss`` names that has options."""
    import dataclasses

    from avpipe.models.losses import build_kind_losses  # imports torch: only for this stage
    from avpipe.models.registry import validate_model_config

    plain = to_plain(train)
    assert isinstance(plain, dict)
    plain["features"] = [
        spec.key if spec.modality.value == "auto" else to_plain(spec) for spec in train.feature_specs
    ]
    plain["model"]["config"] = to_plain(validate_model_config(train.model.name, train.model.config))
    for loss in build_kind_losses(train.loss).values():
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
