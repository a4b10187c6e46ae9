"""``train.unlabeled: delete``: training and validation frames without a label for any trained task are
removed before windowing, as the ABAW2 preprocessing keeps only labelled frames (sucv/ABAW2
preprocessing.py:331-336, ``labeled_indices``), so windows join the labelled stretches of a video.

avpipe's default ``mask`` keeps those frames in the windows (the model sees their context) and leaves them
out of the losses and metrics. Test videos are never cut: every frame of theirs is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from avpipe.models.data import VideoData
from avpipe.models.tasks import frames_with_any_label
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.labels import FrameLabels


def labelled_frames(labels: FrameLabels, tasks: Sequence[Task | str] | None) -> np.ndarray:
    """(T,) True where the frame has a label for at least one of ``tasks`` (task keys; None: any task the
    labels carry, what ``train.tasks`` null trains). A frame with valence alone counts for ``va``."""
    keys = None if tasks is None else [str(getattr(task, "value", task)) for task in tasks]
    return frames_with_any_label(labels, keys)


def delete_unlabelled(video: VideoData, tasks: Sequence[Task | str] | None) -> tuple[VideoData, int]:
    """The video without its frames unlabelled for every task in ``tasks``, and how many were removed."""
    keep = labelled_frames(video.labels, tasks)
    removed = int(keep.size - np.count_nonzero(keep))
    if removed == 0:
        return video, 0
    labels = video.labels
    cut_labels = replace(
        labels,
        valence_arousal=labels.valence_arousal[keep],
        expression=labels.expression[keep],
        action_units=labels.action_units[keep],
        dimensions={name: values[keep] for name, values in labels.dimensions.items()},
        categories={name: values[keep] for name, values in labels.categories.items()},
        multilabels={name: values[keep] for name, values in labels.multilabels.items()},
        raters={name: values[keep] for name, values in labels.raters.items()},
    )
    cut = VideoData(
        video_id=video.video_id,
        time=video.time[keep],
        frame_index=video.frame_index[keep],
        features={key: values[keep] for key, values in video.features.items()},
        valid={key: values[keep] for key, values in video.valid.items()},
        labels=cut_labels,
    )
    return cut, removed
