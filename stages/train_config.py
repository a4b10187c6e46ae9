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
from typing import TYPE_CHECKING

from avpipe.models.train_inputs import resolved_train, train_inputs
from avpipe.pipeline.results import write_train_inputs, write_train_params

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
