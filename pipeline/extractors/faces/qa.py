"""QA you can look at: a contact sheet of sampled crops with their times, over a confidence strip.

The sheet is built from a stored face shard (only the sampled crop rows are read), so it shows what
the embedding stage will actually get. Tile borders and the strip's background use the mask colours:
green detected, blue tracked, orange held, grey missing. The header says how many frames each mask
value has and what the tracker's searches did (``search_*`` shard attributes, see ``SearchStats``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avpipe.pipeline import atomic
from avpipe.pipeline.atomic import OutputWriteError
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.runner import RunReport
from avpipe.pipeline.store import FeatureStore, shard_name
from avpipe.pipeline.types import MaskValue

EXTRACTOR = "faces"
SEARCH_PREFIX = "search_"
MASK_COLOURS = {  # RGB
    MaskValue.MISSING: (150, 150, 150),
    MaskValue.VALID: (40, 170, 60),
    MaskValue.TRACKED: (50, 110, 220),
    MaskValue.HELD: (240, 150, 30),
}
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SheetLayout:
    """Sizes of the contact sheet, in pixels of the PNG."""

    tiles: int = 24
    columns: int = 8
    tile: int = 112
    border: int = 3
    label: int = 16
    header: int = 44
    strip: int = 100


@dataclass(frozen=True)
class SheetData:
    """What a sheet shows: the whole video's time/mask/prob and the sampled rows' crops."""

    title: str
    time: np.ndarray  # (T,)
    mask: np.ndarray  # (T,)
    prob: np.ndarray  # (T,)
    rows: np.ndarray  # (n,) sampled row numbers
    crops: np.ndarray  # (n, S, S, 3) uint8
    searches: dict[str, int] = field(default_factory=dict)  # the shard's search_* counts, prefix dropped


def sample_rows(n_frames: int, tiles: int) -> np.ndarray:
    """Evenly spread row numbers, first and last included."""
    if n_frames <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n_frames - 1, num=min(tiles, n_frames)).round().astype(np.int64))


def load_sheet_data(store: FeatureStore, video_id: str, layout: SheetLayout = SheetLayout()) -> SheetData:
    """Read the shard's timeline, probabilities and the crops of the sampled rows (largest size)."""
    shard = store.read(EXTRACTOR, video_id, names=["prob"])
    sizes = shard.attrs.get("sizes")
    if not sizes:
        raise StoreError(f"{store.shard_path(EXTRACTOR, video_id)}: face shard has no 'sizes' attribute")
    name = f"crops_{max(int(s) for s in sizes)}"
    rows = sample_rows(len(shard), layout.tiles)
    size = max(int(s) for s in sizes)
    stacked = _read_sampled_rows(store, video_id, name, rows, (size, size, 3))
    searches = {
        k.removeprefix(SEARCH_PREFIX): int(v) for k, v in shard.attrs.items() if k.startswith(SEARCH_PREFIX)
    }
    return SheetData(video_id, shard.time, shard.mask, shard.arrays["prob"], rows, stacked, searches)


def _read_sampled_rows(
    store: FeatureStore, video_id: str, name: str, rows: np.ndarray, row_shape: tuple[int, ...]
) -> np.ndarray:
    """``rows`` of a dataset, one read per window of ``store.chunk_frames`` rows: reading them one by one
    decompresses a whole chunk for every row (most of the sheet's time on a short video)."""
    out = np.zeros((len(rows), *row_shape), np.uint8)
    windows = rows // store.chunk_frames
    for window in np.unique(windows):
        picked = np.flatnonzero(windows == window)
        first, last = int(rows[picked[0]]), int(rows[picked[-1]])
        block = store.read_rows(EXTRACTOR, video_id, name, first, last + 1)
        out[picked] = block[rows[picked] - first]
    return out


def render_sheet(data: SheetData, layout: SheetLayout = SheetLayout()) -> np.ndarray:
    """The contact sheet as an RGB uint8 image."""
    cell_w = layout.tile + 2 * layout.border
    cell_h = cell_w + layout.label
    n_rows = max(1, -(-len(data.rows) // layout.columns))
    width = layout.columns * cell_w
    height = layout.header + n_rows * cell_h + layout.strip
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    _put_text(sheet, _title(data), (4, 16), 0.45)
    _put_text(sheet, _search_line(data), (4, layout.header - 8), 0.38)
    for k, (row, crop) in enumerate(zip(data.rows, data.crops, strict=True)):
        x = (k % layout.columns) * cell_w
        y = layout.header + (k // layout.columns) * cell_h
        colour = MASK_COLOURS.get(MaskValue(int(data.mask[row])), INK)
        sheet[y : y + cell_w, x : x + cell_w] = colour
        tile = cv2.resize(crop, (layout.tile, layout.tile), interpolation=cv2.INTER_AREA)
        sheet[
            y + layout.border : y + layout.border + layout.tile,
            x + layout.border : x + cell_w - layout.border,
        ] = tile
        _put_text(sheet, f"{data.time[row]:.2f}s", (x + 4, y + cell_h - 4), 0.4)
    _draw_strip(sheet[height - layout.strip :], data)
    return sheet


def _title(data: SheetData) -> str:
    counts = detection_summary(data.mask)
    return (
        f"{data.title}: {counts['frames']} frames, face found on {counts['detection_rate']:.1%}: "
        f"detected {counts['valid']}, tracked {counts['tracked']}, held {counts['held']}, "
        f"missing {counts['missing']}"
    )


def _search_line(data: SheetData) -> str:
    s = data.searches
    if not s:
        return "searches: not recorded in this shard"
    return (
        f"whole-frame searches {s.get('full_cascade', 0)} (keyframes {s.get('keyframes', 0)}, "
        f"re-detections {s.get('redetected', 0)}, probes {s.get('probed', 0)}); skipped as unchanged: "
        f"keyframes {s.get('keyframes_skipped', 0)}, probes {s.get('probes_skipped', 0)}; "
        f"identity rejections {s.get('identity_rejections', 0)}, tracks {s.get('tracks_started', 0)}"
    )


def _draw_strip(strip: np.ndarray, data: SheetData) -> None:
    """The face probability as a line over time (0 to 1, grid at 0.5), the mask as a colour bar
    under it, and the colour legend."""
    height, width = strip.shape[:2]
    n = len(data.mask)
    left, top, bar, legend = 30, 6, 12, 16
    plot_h = height - top - bar - legend - 4
    for value, label in ((1.0, "1"), (0.5, ".5"), (0.0, "0")):
        y = top + round((1 - value) * plot_h)
        strip[y, left:] = (200, 200, 200)
        _put_text(strip, label, (4, y + 4), 0.35)
    if n == 0:
        return
    plot_w = width - left - 2
    columns = np.minimum((np.arange(plot_w) * n) // plot_w, n - 1)
    prob = np.clip(np.nan_to_num(data.prob[columns], nan=0.0), 0.0, 1.0)
    ys = (top + (1 - prob) * plot_h).round().astype(np.int32)
    points = np.stack([left + np.arange(plot_w, dtype=np.int32), ys], axis=1)
    cv2.polylines(strip, [points.reshape(-1, 1, 2)], isClosed=False, color=INK, thickness=1)
    bar_top = top + plot_h + 3
    for value, colour in MASK_COLOURS.items():
        strip[bar_top : bar_top + bar, left : left + plot_w][:, data.mask[columns] == value] = colour
    x = left
    for value, colour in MASK_COLOURS.items():
        strip[height - 12 : height - 4, x : x + 8] = colour
        name = {MaskValue.VALID: "detected"}.get(value, value.name.lower())
        _put_text(strip, name, (x + 11, height - 4), 0.35)
        x += 90
    _put_text(strip, f"face prob, {data.time[0]:.1f}s to {data.time[-1]:.1f}s", (x + 10, height - 4), 0.35)


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    cv2.putText(image, text, origin, FONT, scale, INK, 1, cv2.LINE_AA)


def write_contact_sheet(
    store: FeatureStore,
    video_id: str,
    path: str | Path,
    layout: SheetLayout = SheetLayout(),
    data: SheetData | None = None,
) -> Path:
    """Render the sheet of one stored video (``data`` if already loaded) to a PNG at ``path``."""
    out = Path(path)
    image = render_sheet(data if data is not None else load_sheet_data(store, video_id, layout), layout)
    encoded, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not encoded:
        raise OSError(f"{out}: cannot encode the contact sheet PNG")
    return atomic.write_bytes(out, png.tobytes())  # unique temp name: concurrent runs never collide


def video_summary(data: SheetData) -> dict[str, float | int]:
    """A video's line of the stage metrics: frame counts per mask value, detection rate, searches."""
    return {**detection_summary(data.mask), **{f"{SEARCH_PREFIX}{k}": v for k, v in data.searches.items()}}


def detection_summary(mask: np.ndarray) -> dict[str, float | int]:
    """Frame counts per mask value and the detection rate (detected or tracked over all frames)."""
    counts = {v.name.lower(): int(np.count_nonzero(mask == v)) for v in MaskValue}
    n = int(mask.shape[0])
    found = counts["valid"] + counts["tracked"]
    return {"frames": n, **counts, "detection_rate": round(found / n, 4) if n else 0.0}


METRICS_FILE = "faces_metrics.json"


def write_qa(
    store: FeatureStore, rows: list[ManifestRow], report: RunReport, qa_dir: Path, reports_dir: Path
) -> dict[str, Any]:
    """One contact sheet per stored video and the stage metrics; returns the metrics written.
    ``frames_per_second`` counts the contact sheets' time too (extraction alone:
    ``extraction_frames_per_second``)."""
    started = time.perf_counter()
    per_video: dict[str, Any] = {}
    sheets_not_written = 0
    for row in rows:
        try:
            data = load_sheet_data(store, row.video_id)
        except StoreError as err:  # failed this run: its reason is in the failures report
            log.debug("no QA for %s: %s", row.video_id, err)
            continue
        try:
            write_contact_sheet(store, row.video_id, qa_dir / sheet_name(row.video_id), data=data)
        except OutputWriteError as err:  # a full disk costs the picture, not the stage
            log.warning("no QA contact sheet for %s: %s", row.video_id, err)
            sheets_not_written += 1
        per_video[row.video_id] = video_summary(data)
    qa_seconds = time.perf_counter() - started
    rates = [v["detection_rate"] for v in per_video.values()]
    busy = report.processing_seconds + qa_seconds
    metrics = {
        "videos": len(per_video),
        "failed": report.failed,
        "frames_extracted": report.frames,
        "frames_per_second": round(report.frames / busy, 2) if report.frames and busy > 0 else 0.0,
        "extraction_frames_per_second": round(report.frames_per_second, 2),
        "qa_seconds": round(qa_seconds, 3),
        "stage_seconds": round(report.seconds + qa_seconds, 3),
        "mean_detection_rate": round(sum(rates) / len(rates), 4) if rates else 0.0,
        "min_detection_rate": min(rates) if rates else 0.0,
        "identity_rejections": sum(v.get("search_identity_rejections", 0) for v in per_video.values()),
        "qa_sheets_not_written": sheets_not_written,
        "per_video": per_video,
    }
    atomic.write_text(reports_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def sheet_name(video_id: str) -> str:
    """``<video>.png``, with the store's file-name escaping for ids that need it."""
    return shard_name(video_id).removesuffix(".h5") + ".png"
