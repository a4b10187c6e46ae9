"""The registered ``faces`` extractor: frames in, warped crops and face metadata out (docs/FACES.md).

Stored arrays per video (one row per timeline frame):

- ``crops_<size>`` (T, S, S, 3) uint8 RGB, one array per configured size;
- ``boxes`` (T, 4) float32 x1, y1, x2, y2 and ``landmarks`` (T, 5, 2) float32, full-resolution px,
  NaN where no face is stored;
- ``prob`` (T,) float32, the O-net face probability (0 where none);
- ``mask``: MaskValue VALID (whole-frame detection), TRACKED (local search between detections),
  HELD (missing policy "hold": the last face repeated), MISSING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from avpipe.pipeline.errors import ExtractorError, MediaError
from avpipe.pipeline.extractors.faces.config import CropMode, FacesConfig, MissingPolicy
from avpipe.pipeline.extractors.faces.weights import missing_mtcnn_weights
from avpipe.pipeline.registry import Extractor, InputKind, register_extractor
from avpipe.pipeline.types import FeatureSet, Frame, MaskValue, Timeline, VideoContext

if TYPE_CHECKING:
    from avpipe.pipeline.extractors.faces.observation import Observation, SearchStats

log = logging.getLogger(__name__)

BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")
# MTCNN's five points, in its order ("left" as seen in the picture): detect.Faces.landmarks
LANDMARK_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@register_extractor
class FacesExtractor(Extractor):
    name = "faces"
    version = "1"
    input_kind = InputKind.FRAMES
    config_class = FacesConfig
    description = (
        "MTCNN face detection + tracking; 5-point warped crops (crops_<size>), boxes, landmarks, prob"
    )

    def __init__(self, config: FacesConfig | None = None) -> None:
        super().__init__(config)
        self._cascade: Any = None

    @property
    def feature_dim(self) -> int:
        return 0

    @classmethod
    def column_names(
        cls, array: str, row_shape: tuple[int, ...], attrs: Mapping[str, Any]
    ) -> list[str] | None:
        """``box_x1`` .. ``box_y2`` and ``landmark_<point>_x|y`` (MTCNN's point order) in tables."""
        if array == "boxes" and row_shape == (4,):
            return list(BOX_COLUMNS)
        if array == "landmarks" and row_shape == (len(LANDMARK_POINTS), 2):
            return [f"landmark_{point}_{axis}" for point in LANDMARK_POINTS for axis in ("x", "y")]
        return None

    def preflight(self) -> None:
        """Check facenet-pytorch and its MTCNN weights are installed, without importing torch: the
        driver stays light and the workers load the networks (``setup``)."""
        missing = missing_mtcnn_weights()
        if missing:
            raise ExtractorError(f"faces: facenet-pytorch's MTCNN weights are missing: {', '.join(missing)}")

    def setup(self, device: str) -> None:
        from avpipe.pipeline.extractors.faces.detect import MtcnnCascade

        self._cascade = MtcnnCascade(device, self.config.thresholds, half=self.config.half)
        log.debug("faces: MTCNN on %s", device)

    def extract(self, source: Iterable[Frame], timeline: Timeline, context: VideoContext) -> FeatureSet:
        if self._cascade is None:
            self.setup("cpu")
        from avpipe.pipeline.extractors.faces.observation import SearchStats

        rows = FaceRows.allocate(len(timeline), self.config)
        stats = SearchStats()
        n = 0
        for n, (frame, observation) in enumerate(self.observe(source, timeline, context, stats), start=1):
            rows.put(n - 1, frame.image, observation)
        if n != len(timeline):
            raise MediaError(context.media_path, f"decoded {n} frames, but its timeline has {len(timeline)}")
        return FeatureSet(
            time=timeline.time,
            frame_index=timeline.frame_index,
            mask=rows.mask,
            arrays=rows.arrays(),
            attrs=self.describe(context, stats),
        )

    def extract_blocks(
        self, source: Iterable[Frame], timeline: Timeline, context: VideoContext
    ) -> Iterator[FeatureSet]:
        """``extract`` in blocks of ``block_frames`` rows: memory stays flat whatever the video's length."""
        from avpipe.pipeline.extractors.faces.observation import SearchStats

        if self._cascade is None:
            self.setup("cpu")
        total, block, start, n = len(timeline), None, 0, 0
        held: FaceRows | None = None
        stats = SearchStats()  # the store keeps the last block's attrs: complete by then
        for n, (frame, observation) in enumerate(self.observe(source, timeline, context, stats), start=1):
            if block is None:
                start = n - 1
                block = FaceRows.allocate(min(self.config.block_frames, total - start), self.config, held)
            block.put(n - 1 - start, frame.image, observation)
            if n - start == len(block.mask):
                yield self._block(block, timeline, start, self.describe(context, stats))
                held, block = block, None
        if n != total:
            raise MediaError(context.media_path, f"decoded {n} frames, but its timeline has {total}")
        if total == 0:
            yield self._block(FaceRows.allocate(0, self.config), timeline, 0, self.describe(context, stats))

    def _block(self, rows: FaceRows, timeline: Timeline, start: int, attrs: dict[str, Any]) -> FeatureSet:
        stop = start + len(rows.mask)
        return FeatureSet(
            time=timeline.time[start:stop],
            frame_index=timeline.frame_index[start:stop],
            mask=rows.mask,
            arrays=rows.arrays(),
            attrs=attrs,
        )

    def observe(
        self,
        source: Iterable[Frame],
        timeline: Timeline,
        context: VideoContext,
        stats: SearchStats | None = None,
    ) -> Iterator[tuple[Frame, Observation]]:
        """(frame, Observation) for every frame of the timeline, in order (the streaming core). The
        searches' counts are added to ``stats``, complete once the last row is out."""
        from avpipe.pipeline.extractors.faces.identity import Identity
        from avpipe.pipeline.extractors.faces.prefetch import prefetched
        from avpipe.pipeline.extractors.faces.select import rule_for_video
        from avpipe.pipeline.extractors.faces.track import FaceTracker, TrackerSettings

        cfg = self.config
        try:
            rule = rule_for_video(cfg.selection, context.subject_position)
        except ValueError as err:
            raise ExtractorError(f"{context.video_id}: {err}") from None
        frames = prefetched(_on_timeline(source, timeline, context), cfg.prefetch_frames)
        settings, identity = TrackerSettings.from_config(cfg), Identity.from_config(cfg, rule)
        threads = self.search_threads()
        if threads == 1:
            yield from FaceTracker(self._cascade, settings, identity, stats=stats).run(frames)
            return
        with ThreadPoolExecutor(
            threads, thread_name_prefix="avpipe-faces", initializer=_one_torch_thread
        ) as pool:
            yield from FaceTracker(self._cascade, settings, identity, pool, stats).run(frames)

    def search_threads(self) -> int:
        """Threads searching intervals in parallel: ``threads``, or torch's thread count (what the
        runner gives each worker) when 0. The networks are too small for torch's own threads to help."""
        if self.config.threads > 0:
            return self.config.threads
        import torch

        return max(1, torch.get_num_threads())

    def describe(self, context: VideoContext, stats: SearchStats | None = None) -> dict[str, Any]:
        """The shard's attributes; with ``stats``, the searches' counts so far (``search_<name>``)."""
        from avpipe.pipeline.extractors.faces.select import rule_for_video
        from avpipe.pipeline.extractors.faces.warp import template

        cfg = self.config
        attrs: dict[str, Any] = {
            "sizes": list(cfg.sizes),
            "crop_mode": cfg.crop_mode.value,
            "selection": rule_for_video(cfg.selection, context.subject_position).value,
            "missing_policy": cfg.missing.value,
            "detector": "mtcnn (facenet-pytorch weights)",
        }
        if cfg.crop_mode is CropMode.WARPED:
            attrs["template"] = template(cfg.largest_size).round(4).tolist()
        else:
            attrs["box_margin"] = cfg.box_margin
        if stats is not None:
            attrs.update({f"search_{name}": count for name, count in stats.as_dict().items()})
        return attrs


def _one_torch_thread() -> None:
    """Each search thread runs its networks on one core: the parallelism is across intervals. With
    torch's OpenMP backend this setting is per thread, so the caller's own setting is untouched."""
    import torch

    torch.set_num_threads(1)


def _on_timeline(source: Iterable[Frame], timeline: Timeline, context: VideoContext) -> Iterator[Frame]:
    """The decoded frames, checked against the timeline (and one another) as they come."""
    shape = None
    for row, frame in enumerate(source):
        if row >= len(timeline):
            raise MediaError(
                context.media_path, f"decoding gave more frames than its {len(timeline)}-frame timeline"
            )
        if int(frame.index) != int(timeline.frame_index[row]):
            raise MediaError(
                context.media_path,
                f"decoded frame {row} is source frame {frame.index}, "
                f"the timeline says {timeline.frame_index[row]}",
            )
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MediaError(context.media_path, f"frame {frame.index} is not RGB uint8 (got {image.shape})")
        if shape is not None and image.shape != shape:
            raise MediaError(
                context.media_path,
                f"the picture size changes at frame {frame.index} ({shape[1]}x{shape[0]} -> "
                f"{image.shape[1]}x{image.shape[0]}); re-encode it at one size",
            )
        shape = image.shape
        yield frame


@dataclass
class FaceRows:
    """The per-frame output arrays of one video, filled row by row."""

    config: FacesConfig
    crops: dict[int, np.ndarray]
    boxes: np.ndarray
    landmarks: np.ndarray
    prob: np.ndarray
    mask: np.ndarray
    _last: int | None = None  # row of the last stored face (missing policy "hold")

    _previous: FaceRows | None = None  # the block before this one (its last face can be held over)

    @classmethod
    def allocate(cls, n: int, config: FacesConfig, previous: FaceRows | None = None) -> FaceRows:
        return cls(
            config=config,
            crops={s: np.zeros((n, s, s, 3), np.uint8) for s in config.sizes},
            boxes=np.full((n, 4), np.nan, np.float32),
            landmarks=np.full((n, 5, 2), np.nan, np.float32),
            prob=np.zeros((n,), np.float32),
            mask=np.full((n,), MaskValue.MISSING, np.uint8),
            _previous=previous.last_face() if previous is not None else None,
        )

    def last_face(self) -> FaceRows | None:
        """A one-row FaceRows holding this block's last stored face (for the "hold" policy), or None."""
        source = self if self._last is not None else self._previous
        if source is None or source._last is None:
            return None
        row = source._last
        return FaceRows(
            config=self.config,
            crops={s: c[row : row + 1].copy() for s, c in source.crops.items()},
            boxes=source.boxes[row : row + 1].copy(),
            landmarks=source.landmarks[row : row + 1].copy(),
            prob=np.zeros((1,), np.float32),
            mask=source.mask[row : row + 1].copy(),
            _last=0,
        )

    def put(self, row: int, image: np.ndarray, observation: Observation) -> None:
        if observation.box is not None:
            for size, crop in self._crops(image, observation).items():
                self.crops[size][row] = crop
            self.boxes[row] = observation.box
            self.landmarks[row] = observation.landmarks
            self.prob[row] = observation.prob
            self.mask[row] = observation.status
            self._last = row
        elif self.config.missing is MissingPolicy.HOLD:
            source, last = (self, self._last) if self._last is not None else (self._previous, 0)
            if source is None:
                return
            for size, crops in self.crops.items():
                crops[row] = source.crops[size][last]
            self.boxes[row] = source.boxes[last]
            self.landmarks[row] = source.landmarks[last]
            self.mask[row] = MaskValue.HELD  # prob stays 0: nothing was detected on this frame

    def _crops(self, image: np.ndarray, observation: Observation) -> dict[int, np.ndarray]:
        from avpipe.pipeline.extractors.faces.warp import box_crops, warped_crops

        if self.config.crop_mode is CropMode.BOX:
            return box_crops(image, observation.box, self.config.sizes, self.config.box_margin)
        return warped_crops(image, observation.landmarks, self.config.sizes)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"crops_{size}": crops for size, crops in self.crops.items()}
        out.update(boxes=self.boxes, landmarks=self.landmarks, prob=self.prob)
        return out
