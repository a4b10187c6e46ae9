"""The README's speech figure: one clip's audio and its per-frame Silero speech probability and mask.

    python scripts/plot_speech.py VIDEO_ID [--store data/features] [--media data/demo/videos/VIDEO_ID.mp4]
        [--out docs/img/speech_demo.png]

Reads the ``speech`` shard written by ``avpipe audio speech`` (the demo runs it) and decodes the clip's
audio on the same container clock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from avpipe.pipeline.store import FeatureStore
from avpipe.pipeline.timeline import decode_audio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video_id")
    parser.add_argument("--store", default="data/features")
    parser.add_argument("--media", default=None, help="default: data/demo/videos/<video_id>.mp4")
    parser.add_argument("--out", default="docs/img/speech_demo.png")
    args = parser.parse_args()
    media = args.media or f"data/demo/videos/{args.video_id}.mp4"
    speech = FeatureStore(Path(args.store)).read("speech", args.video_id)
    track = decode_audio(media, 16000)
    if track is None:
        raise SystemExit(f"{media} has no audio stream")
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True, height_ratios=(1.3, 1))
    times = track.start + np.arange(track.samples.shape[0]) / track.sample_rate
    top.plot(times, track.samples, linewidth=0.3, color="0.3")
    top.set_ylabel("audio")
    top.set_title(
        f"{args.video_id}: Silero VAD on the video frames ({speech.attrs.get('model', 'silero-vad')})"
    )
    bottom.plot(speech.time, speech.arrays["features"][:, 0], color="tab:blue", label="speech probability")
    bottom.fill_between(
        speech.time,
        0,
        speech.arrays["speech"],
        step="mid",
        color="tab:orange",
        alpha=0.3,
        label="speech segment (mask)",
    )
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("time on the container clock (s)")
    bottom.set_ylabel("per frame")
    bottom.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
