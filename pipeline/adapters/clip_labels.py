"""Whole-clip labels that a recipe parses from file names or a corpus-wide index (CREMA-D, RAVDESS,
MSP-Podcast): the recipe declares its tasks (``ClipTask``), stores one clip's values in
``Candidate.label_text`` as JSON, and ``clip_label_tracks`` turns them into clip-keyed tracks, which
label every frame of the clip (pipeline/labels.py).

A recipe that finds another of its corpora's files (a video beside the audio, say) in the same tree
can share this; the JSON keeps the recipe's parse hashed into the labels shard, so a changed parse
(another name scheme version, a new option) rewrites the shards.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from avpipe.pipeline.adapters.base import Candidate
from avpipe.pipeline.errors import ConfigError, LabelError
from avpipe.pipeline.labels import UNLABELED_EXPRESSION, KeyKind, LabelTrack, RawLabels, TaskKind
from avpipe.pipeline.manifest import Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipTask:
    """One clip-level task of a recipe: a continuous dimension or a categorical task with its classes."""

    name: str
    kind: TaskKind
    class_names: tuple[str, ...] = ()


def encode_clip_labels(values: Mapping[str, float | int | None]) -> str:
    """``{"emotion": 3, "arousal": 0.25, ...}`` -> the stable JSON kept in ``Candidate.label_text``
    (a class index, a number, or None for unlabeled)."""
    return json.dumps(dict(sorted(values.items())), separators=(",", ":"))


def clip_label_tracks(candidate: Candidate, tasks: Sequence[ClipTask]) -> RawLabels:
    """One clip-keyed track per task the candidate's ``label_text`` has a value for."""
    source = str(candidate.media_path)
    try:
        values = json.loads(candidate.label_text)
    except json.JSONDecodeError as err:
        raise LabelError(source, f"unreadable parsed labels {candidate.label_text!r}: {err}") from None
    tracks = []
    keys = np.zeros(1, dtype=np.int64)
    for task in tasks:
        if task.name not in values:
            continue
        value = values[task.name]
        if task.kind is TaskKind.CONTINUOUS:
            number = math.nan if value is None else float(value)
            array = np.asarray([number], dtype=np.float32)
        else:
            array = np.asarray([UNLABELED_EXPRESSION if value is None else int(value)], dtype=np.int16)
        tracks.append(LabelTrack(task.name, array, keys, KeyKind.CLIP, source, task.kind, task.class_names))
    return RawLabels(tracks)


def speaker_split_table(
    speaker_splits: Mapping[str, Iterable[str]], normalize: Callable[[str], str] = str
) -> dict[str, str]:
    """``{"validation": ["1001"], "test": [...]}`` -> speaker -> split (a speaker in two is an error);
    ``normalize`` spells a speaker as the corpus does (RAVDESS: ``1`` -> ``01``)."""
    table: dict[str, str] = {}
    for split, speakers in speaker_splits.items():
        try:
            Split(split)
        except ValueError:
            known = ", ".join(s.value for s in Split)
            raise ConfigError(
                f"dataset.options.speaker_splits.{split}", f"unknown split; known: {known}"
            ) from None
        for speaker in speakers:
            speaker = normalize(str(speaker).strip())
            if speaker in table:
                raise ConfigError(
                    "dataset.options.speaker_splits",
                    f"speaker {speaker!r} is in {table[speaker]} and {split}",
                )
            table[speaker] = split
    return table


def warn_unknown_speakers(adapter: str, table: Mapping[str, str], found: Iterable[str]) -> list[str]:
    """Speakers ``dataset.options.speaker_splits`` names that the corpus does not have (a typo would
    otherwise leave a speaker silently in train); logged as a warning and returned."""
    unknown = sorted(set(table) - set(found))
    if unknown:
        log.warning(
            "%s: dataset.options.speaker_splits names speakers not found: %s", adapter, ", ".join(unknown)
        )
    return unknown
