"""``train.unlabeled: delete``: training and validation frames without a label for any trained task are
removed before windowing, as the ABAW2 preprocessing keeps only labelled frames (sucv/ABAW2
preprocessing.py:331-336, ``labeled_indices``), so windows join the labelled stretches of a video.

avpipe's default ``mask`` keeps those frames in the windows (the model sees their context) and leaves them
out of the losses and metrics. Test videos are never cut: every frame of theirs is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avpipe.models.data import VideoData
from avpipe.pipeline.config.train import Task
from avpipe.pipeline.labels import UNLABELED_AU, UNLABELED_EXPRESSION, UNLABELED_VA, FrameLabels


def labelled_frames(labels: FrameLabels, tasks: Sequence[Task]) -> np.ndarray:
    """(T,) True where the frame has a label for at least one of ``tasks``."""
    keep = np.zeros(len(labels), dtype=bool)
    if Task.VA in tasks:
        keep |= np.all(labels.valence_arousal != UNLABELED_VA, axis=1)
    if Task.EXPR in tasks:
        keep |= labels.expression != UNLABELED_EXPRESSION
    if Task.AU in tasks:
        keep |= np.any(labels.action_units != UNLABELED_AU, axis=1)
    return keep


def delete_unlabelled(video: VideoData, tasks: Sequence[Task]) -> tuple[VideoData, int]:
    """The video without its frames unlabelled for every task in ``tasks``, and how many were removed."""
    keep = labelled_frames(video.labels, tasks)
    removed = int(keep.size - np.count_nonzero(keep))
    if removed == 0:
        return video, 0
    labels = FrameLabels(
        valence_arousal=video.labels.valence_arousal[keep],
        expression=video.labels.expression[keep],
        action_units=video.labels.action_units[keep],
    )
    cut = VideoData(
        video_id=video.video_id,
        time=video.time[keep],
        frame_index=video.frame_index[keep],
        features={key: values[keep] for key, values in video.features.items()},
        valid={key: values[keep] for key, values in video.valid.items()},
        labels=labels,
    )
    return cut, removed
