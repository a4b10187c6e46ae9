"""The picture test that lets a whole-frame search be skipped (pipeline/extractors/faces/change.py),
on frames that went through H.264: encoding noise is not a change, a face arriving is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from avpipe.pipeline.extractors.faces.change import BLOCK, picture_signature, unchanged
from avpipe.pipeline.extractors.faces.config import FacesConfig
from avpipe.pipeline.timeline import iter_frames
from avpipe.pipeline.tools import ffmpeg_binary
from tests import face_scenes


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """A faceless picture for 12 frames, then carphone on it for 3: libx264 at crf 23, decoded."""
    background = face_scenes.background()
    height, width = background.shape[:2]
    face = face_scenes.tile("carphone", 0)
    frames = [background.copy() for _ in range(15)]
    for frame in frames[12:]:
        frame[20 : 20 + face.shape[0], 40 : 40 + face.shape[1]] = face
    path = tmp_path_factory.mktemp("change") / "coded.mp4"
    command = [ffmpeg_binary(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", "30", "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "23", "-g", "5", "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(command, input=b"".join(f.tobytes() for f in frames), check=True, capture_output=True)
    return [frame.image for frame in iter_frames(Path(path))]


def test_coding_noise_is_no_change_and_a_face_is(coded) -> None:
    threshold = FacesConfig().skip_unchanged
    signatures = [picture_signature(image) for image in coded]
    noise = max(float(np.abs(a - b).max()) for a in signatures[:12] for b in signatures[:12])
    assert 0 < noise <= threshold / 2  # the coder did move blocks (keyframes every 5 frames), a little
    assert all(unchanged(signatures[0], s, threshold) for s in signatures[1:12])
    assert not any(unchanged(signatures[0], s, threshold) for s in signatures[12:])


def test_signature_is_the_block_mean_colour() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(4 * BLOCK, 3 * BLOCK, 3), dtype=np.uint8)
    expected = image.reshape(4, BLOCK, 3, BLOCK, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(picture_signature(image), expected, atol=0.5)  # uint8 rounding
    moved = image.copy()
    moved[:BLOCK, :BLOCK] = np.clip(moved[:BLOCK, :BLOCK].astype(int) + 20, 0, 255)
    assert not unchanged(picture_signature(image), picture_signature(moved), 8.0)
    assert unchanged(picture_signature(image), picture_signature(image), 0.0)
