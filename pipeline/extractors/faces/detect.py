"""MTCNN face detection with facenet-pytorch's shipped weights (in ``nets``), made cheap.

facenet-pytorch resamples the full frame to every pyramid level with ``F.interpolate(mode="area")``
and crops the R/O-net inputs the same way. Area resampling is a box mean, so all of it can be read
from one integral image of the full-resolution frame (``cv2.integral``, < 1 ms at 720p): any
pyramid level, any window of a level, any crop. That gives two cheap searches with the exact
arithmetic of facenet-pytorch's cascade:

- a whole-frame search that skips the pyramid levels finer than ``detect_max_side`` (the expensive
  ones, which only find faces smaller than ``12 / scale`` px), and
- a local search (the tracker's) in a window around a predicted box, on the few levels where a face
  of that size is small enough for the P-net's 12-px window to find it.

Boxes and landmarks come out in full-resolution pixels. For a face both searches see, the result
is the one facenet-pytorch's ``MTCNN.detect`` returns on the full frame (same candidates, same
crops, same networks), which is what keeps the landmarks within a pixel of the naive loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from avpipe.pipeline.extractors.faces.nets import load_mtcnn
from avpipe.pipeline.extractors.faces.nms import batched_nms

log = logging.getLogger(__name__)

PNET_CELL = 12  # P-net window (px at its pyramid level)
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48
NORM_MEAN = 127.5
NORM_SCALE = 0.0078125
# Integer sums of a uint8 frame fit in int32 up to this many pixels (255 * 8.4M < 2**31).
INT32_MAX_PIXELS = (2**31 - 1) // 255
# Frames whose integral images are held at once (11 MB each at 720p): bounds a call's memory.
MAX_FRAMES_PER_CALL = 5


@dataclass(frozen=True)
class Faces:
    """The faces found in one frame, full-resolution pixels."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    probs: np.ndarray  # (N,) float32 O-net face probability
    landmarks: np.ndarray  # (N, 5, 2) float32 x, y: left eye, right eye, nose, mouth left, mouth right

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


@dataclass(frozen=True)
class Search:
    """Where to look in one frame: a window (None: the whole frame) and the pyramid scales to run."""

    window: tuple[float, float, float, float] | None
    scales: tuple[float, ...]


@dataclass(frozen=True)
class Pyramid:
    """facenet-pytorch's scale sequence for a frame size, and which of its levels we compute."""

    height: int
    width: int
    scales: tuple[float, ...]  # every level facenet-pytorch would run, finest first

    @classmethod
    def for_frame(cls, height: int, width: int, min_face_size: float, factor: float) -> Pyramid:
        # The same float recurrence as facenet-pytorch, so each level has the same pixel size.
        scales = []
        scale = 12.0 / min_face_size
        min_side = min(height, width) * scale
        while min_side >= PNET_CELL:
            scales.append(scale)
            scale = scale * factor
            min_side = min_side * factor
        return cls(height, width, tuple(scales))

    def level_size(self, scale: float) -> tuple[int, int]:
        return int(self.height * scale + 1), int(self.width * scale + 1)

    def coarse_scales(self, max_side: int) -> tuple[float, ...]:
        """Levels whose long side is at most ``max_side`` (the whole-frame search)."""
        return tuple(s for s in self.scales if max(self.level_size(s)) <= max_side)

    def scales_for_face(self, face_size: float, max_face_px: float, max_side: int) -> tuple[float, ...]:
        """Coarse levels on which a face of ``face_size`` px is at most ``max_face_px`` px."""
        return tuple(s for s in self.coarse_scales(max_side) if face_size * s <= max_face_px)


class FrameSums:
    """Integral image of one RGB frame, or of a region of it: box means of any rectangle, i.e. area
    resampling. Rectangles reaching outside the region are cut to it (the tracker's region holds its
    search window with a wide margin, so only far-off candidates are ever cut)."""

    def __init__(self, frame: np.ndarray, region: tuple[int, int, int, int] | None = None) -> None:
        self.height, self.width = frame.shape[:2]
        top, bottom, left, right = region if region is not None else (0, self.height, 0, self.width)
        self.top, self.left = top, left
        self.region_h, self.region_w = bottom - top, right - left
        depth = cv2.CV_32S if self.region_h * self.region_w <= INT32_MAX_PIXELS else cv2.CV_64F
        self.sums = cv2.integral(frame[top:bottom, left:right], sdepth=depth)

    def _rows(self, bounds: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(bounds - self.top, 0), self.region_h)

    def _cols(self, bounds: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(bounds - self.left, 0), self.region_w)

    def resample(
        self, top: int, bottom: int, left: int, right: int, out_h: int, out_w: int, rows: slice, cols: slice
    ) -> np.ndarray:
        """Rows/cols ``rows``/``cols`` of the rectangle [top:bottom, left:right] area-resampled to
        (out_h, out_w), as torch's adaptive average pooling computes it: (3, n_rows, n_cols) float32."""
        r0, r1 = (
            self._rows(b) for b in _pool_bounds(np.arange(rows.start, rows.stop), bottom - top, out_h, top)
        )
        c0, c1 = (
            self._cols(b) for b in _pool_bounds(np.arange(cols.start, cols.stop), right - left, out_w, left)
        )
        first, last = int(c0[0]), int(c1[-1])
        # Only the columns the output needs, channel-interleaved: (H + 1, (last - first + 1) * 3).
        flat = self.sums[:, first : last + 1].reshape(self.sums.shape[0], -1)
        band = flat[r1]
        band -= flat[r0]
        channel = np.arange(3)
        total = np.take(band, ((c1 - first)[:, None] * 3 + channel).ravel(), axis=1)
        total -= np.take(band, ((c0 - first)[:, None] * 3 + channel).ravel(), axis=1)
        area = np.maximum((r1 - r0)[:, None] * (c1 - c0)[None, :], 1).astype(np.float32)
        means = total.reshape(len(r0), len(c0), 3).astype(np.float32) / area[:, :, None]
        return means.transpose(2, 0, 1)

    def resample_boxes(
        self, top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray, size: int
    ) -> np.ndarray:
        """Each rectangle [top:bottom, left:right] area-resampled to (size, size), in one vectorised
        gather: (N, 3, size, size) float32."""
        grid = np.arange(size)
        r0, r1 = (self._rows(b) for b in _pool_bounds(grid, (bottom - top)[:, None], size, top[:, None]))
        c0, c1 = (self._cols(b) for b in _pool_bounds(grid, (right - left)[:, None], size, left[:, None]))
        # Flat indices into the (H + 1) * (W + 1) rows of 3 channel sums: one fast take per corner.
        row_len = self.sums.shape[1]
        flat = self.sums.reshape(-1, 3)

        def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return np.take(flat, rows[:, :, None] * row_len + cols[:, None, :], axis=0)

        total = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)  # (N, size, size, 3)
        area = np.maximum((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :], 1).astype(np.float32)
        return (total.astype(np.float32) / area[..., None]).transpose(0, 3, 1, 2)


def _pool_bounds(index: np.ndarray, size: int, out: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    start = index * size // out
    stop = ((index + 1) * size + out - 1) // out
    return start + offset, stop + offset


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - NORM_MEAN) * NORM_SCALE


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares around their centres (in place on a copy), as MTCNN's ``rerec``."""
    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply R/O-net box regression (sizes counted inclusively, as MTCNN's ``bbreg``)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def _min_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS with intersection over the smaller box (MTCNN's last stage); kept indices, best first."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep = []
    while order.size:
        best = order[-1]
        keep.append(best)
        rest = order[:-1]
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = inter_w * inter_h / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class _Candidates:
    """Boxes of every frame of a call at one cascade stage; ``frame`` says whose each box is."""

    boxes: torch.Tensor  # (N, 4) float32
    scores: torch.Tensor  # (N,)
    frame: torch.Tensor  # (N,) int64
    reg: torch.Tensor | None = None  # (N, 4) P-net regression, applied after the cross-level NMS

    def take(self, keep: torch.Tensor) -> _Candidates:
        reg = None if self.reg is None else self.reg[keep]
        return _Candidates(self.boxes[keep], self.scores[keep], self.frame[keep], reg)


class MtcnnCascade:
    """The three MTCNN networks with facenet-pytorch's weights, on one device."""

    def __init__(
        self,
        device: str = "cpu",
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        half: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.thresholds = tuple(float(t) for t in thresholds)
        self.pnet, self.rnet, self.onet = (net.to(self.device, self.dtype) for net in load_mtcnn())

    @torch.inference_mode()
    def detect(self, frames: Sequence[np.ndarray], searches: Sequence[Search]) -> list[Faces]:
        """Faces of each frame (RGB uint8, all the same size) within its search."""
        if len(frames) != len(searches):
            raise ValueError(f"{len(frames)} frames but {len(searches)} searches")
        if not frames:
            return []
        found: list[Faces] = []
        for start in range(0, len(frames), MAX_FRAMES_PER_CALL):
            part = slice(start, start + MAX_FRAMES_PER_CALL)
            sums = [
                FrameSums(f, _search_region(f.shape, s))
                for f, s in zip(frames[part], searches[part], strict=True)
            ]
            candidates = self._propose(sums, searches[part])
            candidates = self._refine(sums, candidates)
            found.extend(self._finish(sums, candidates, len(sums)))
        return found

    # ---- stage 1: P-net on pyramid levels (or windows of them)

    def _propose(self, sums: list[FrameSums], searches: Sequence[Search]) -> _Candidates:
        height, width = sums[0].height, sums[0].width
        found = []
        for scale in sorted({s for search in searches for s in search.scales}, reverse=True):
            level_h, level_w = int(height * scale + 1), int(width * scale + 1)
            members = [i for i, search in enumerate(searches) if scale in search.scales]
            windows = [_level_window(level_h, level_w, scale, searches[i].window) for i in members]
            # One P-net call per level: every frame's window made the same size (still exact parts
            # of the level, so the outputs stay the full level's). A window that cannot grow without
            # losing its end (odd start needed at the level's edge) runs on its own.
            grown = _same_size(windows, level_h, level_w)
            fits = [_covers(g, w) for g, w in zip(grown, windows, strict=True)]
            batch = [(i, g) for i, g, ok in zip(members, grown, fits, strict=True) if ok]
            if batch:
                found.extend(self._pnet_level(sums, *map(list, zip(*batch, strict=True)), scale))
            for i, window, ok in zip(members, windows, fits, strict=True):
                if not ok:
                    found.extend(self._pnet_level(sums, [i], [window], scale))
        if not found:
            return _empty_candidates(self.device)
        return _Candidates(*(torch.cat(parts) for parts in zip(*found, strict=True)))

    def _pnet_level(
        self, sums: list[FrameSums], members: list[int], windows: list[tuple[slice, slice]], scale: float
    ) -> list[tuple[torch.Tensor, ...]]:
        height, width = sums[0].height, sums[0].width
        level_h, level_w = int(height * scale + 1), int(width * scale + 1)
        rows, cols = windows[0]
        if rows.stop - rows.start < PNET_CELL or cols.stop - cols.start < PNET_CELL:
            return []
        batch = np.stack(
            [
                sums[i].resample(0, height, 0, width, level_h, level_w, r, c)
                for i, (r, c) in zip(members, windows, strict=True)
            ]
        )
        reg, prob = self.pnet(self._to_net(batch))
        reg, prob = reg.float(), prob[:, 1].float()
        # Only outputs whose whole 12-px window lies in the computed part equal the full level's.
        valid = torch.zeros_like(prob, dtype=torch.bool)
        for k, (r, c) in enumerate(windows):
            valid[
                k, : _whole_windows(r, level_h, prob.shape[1]), : _whole_windows(c, level_w, prob.shape[2])
            ] = True
        hits = ((prob >= self.thresholds[0]) & valid).nonzero()
        if hits.shape[0] == 0:
            return []
        scores = prob[hits[:, 0], hits[:, 1], hits[:, 2]]
        offsets = reg[hits[:, 0], :, hits[:, 1], hits[:, 2]]
        origin = torch.as_tensor(
            [[c.start // PNET_STRIDE, r.start // PNET_STRIDE] for r, c in windows], device=self.device
        )
        cell = (hits[:, [2, 1]] + origin[hits[:, 0]]).to(torch.float32)
        top_left = ((PNET_STRIDE * cell + 1) / scale).floor()
        bottom_right = ((PNET_STRIDE * cell + PNET_CELL) / scale).floor()
        boxes = torch.cat([top_left, bottom_right], dim=1)
        frame = torch.as_tensor(members, device=self.device)[hits[:, 0]]
        keep = batched_nms(boxes, scores, frame, 0.5)
        return [(boxes[keep], scores[keep], frame[keep], offsets[keep])]

    # ---- stages 2 and 3

    def _refine(self, sums: list[FrameSums], found: _Candidates) -> _Candidates:
        """Cross-level NMS and P-net regression, then the R-net."""
        if found.boxes.shape[0] == 0:
            return found
        found = found.take(batched_nms(found.boxes, found.scores, found.frame, 0.7))
        boxes, reg = found.boxes, found.reg
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack(
            [boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h,
             boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h], dim=1
        )  # fmt: skip
        cand = _Candidates(_square(boxes), found.scores, found.frame)
        cand, crops = self._crops(sums, cand, RNET_SIZE)
        if cand.boxes.shape[0] == 0:
            return cand
        reg, prob = self.rnet(crops)
        score = prob[:, 1].float()
        passed = score > self.thresholds[1]
        cand = _Candidates(cand.boxes[passed], score[passed], cand.frame[passed])
        reg = reg.float()[passed]
        keep = batched_nms(cand.boxes, cand.scores, cand.frame, 0.7)
        cand, reg = cand.take(keep), reg[keep]
        return _Candidates(_square(_regress(cand.boxes, reg)), cand.scores, cand.frame)

    def _finish(self, sums: list[FrameSums], cand: _Candidates, n_frames: int) -> list[Faces]:
        """The O-net: scores, landmarks, final boxes; per-frame NMS on the smaller box."""
        result = [Faces.empty() for _ in range(n_frames)]
        if cand.boxes.shape[0] == 0:
            return result
        cand, crops = self._crops(sums, cand, ONET_SIZE)
        if cand.boxes.shape[0] == 0:
            return result
        reg, points, prob = self.onet(crops)
        score = prob[:, 1].float()
        passed = score > self.thresholds[2]
        boxes, frame = cand.boxes[passed], cand.frame[passed]
        score, reg, points = score[passed], reg.float()[passed], points.float()[passed]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        marks = torch.stack(
            [w * points[:, :5] + boxes[:, :1] - 1, h * points[:, 5:] + boxes[:, 1:2] - 1], dim=2
        )
        boxes = _regress(boxes, reg)
        boxes_np, score_np, marks_np = boxes.cpu().numpy(), score.cpu().numpy(), marks.cpu().numpy()
        frame_np = frame.cpu().numpy()
        for i in np.unique(frame_np):
            mine = np.flatnonzero(frame_np == i)
            keep = mine[_min_nms(boxes_np[mine], score_np[mine], 0.7)]
            result[int(i)] = Faces(
                boxes_np[keep].astype(np.float32),
                score_np[keep].astype(np.float32),
                marks_np[keep].astype(np.float32),
            )
        return result

    def _crops(self, sums: list[FrameSums], cand: _Candidates, size: int) -> tuple[_Candidates, torch.Tensor]:
        """Area-resampled network inputs of every box, cut as MTCNN's ``pad`` does (1-based, clipped).
        Boxes with nothing inside the frame are dropped."""
        height, width = sums[0].height, sums[0].width
        corners = cand.boxes.trunc().to(torch.int64).cpu().numpy()
        x = np.maximum(corners[:, 0], 1)
        y = np.maximum(corners[:, 1], 1)
        ex = np.minimum(corners[:, 2], width)
        ey = np.minimum(corners[:, 3], height)
        inside = (ey > y - 1) & (ex > x - 1)
        frame = cand.frame.cpu().numpy()
        parts = []
        for f in np.unique(frame[inside]):
            mine = np.flatnonzero(inside & (frame == f))
            parts.append((mine, sums[f].resample_boxes(y[mine] - 1, ey[mine], x[mine] - 1, ex[mine], size)))
        if not parts:
            empty = torch.zeros((0, 3, size, size), device=self.device, dtype=self.dtype)
            return cand.take(torch.zeros(0, dtype=torch.int64, device=self.device)), empty
        order = np.concatenate([mine for mine, _ in parts])
        crops = np.concatenate([pixels for _, pixels in parts])
        return cand.take(torch.as_tensor(order, device=self.device)), self._to_net(crops)

    def _to_net(self, pixels: np.ndarray) -> torch.Tensor:
        return _normalise(torch.from_numpy(pixels).to(self.device)).to(self.dtype)


def _empty_candidates(device: torch.device) -> _Candidates:
    return _Candidates(
        torch.zeros((0, 4), device=device),
        torch.zeros((0,), device=device),
        torch.zeros((0,), dtype=torch.int64, device=device),
    )


def _level_window(
    level_h: int, level_w: int, scale: float, window: tuple[float, ...] | None
) -> tuple[slice, slice]:
    """Rows and columns of a pyramid level covering ``window`` (full-resolution px); starts even so
    that the P-net's stride-2 output grid is the full level's."""
    if window is None:
        return slice(0, level_h), slice(0, level_w)
    x1, y1, x2, y2 = window
    top = max(0, int(np.floor(y1 * scale)) // PNET_STRIDE * PNET_STRIDE)
    left = max(0, int(np.floor(x1 * scale)) // PNET_STRIDE * PNET_STRIDE)
    bottom = min(level_h, int(np.ceil(y2 * scale)) + 1)
    right = min(level_w, int(np.ceil(x2 * scale)) + 1)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def _search_region(shape: tuple[int, ...], search: Search) -> tuple[int, int, int, int] | None:
    """The part of the frame a search can read: its window grown by half its size on every side
    (room for the candidate boxes' regression and squaring), as top, bottom, left, right."""
    if search.window is None:
        return None
    height, width = shape[:2]
    x1, y1, x2, y2 = search.window
    grow_x, grow_y = (x2 - x1) / 2, (y2 - y1) / 2
    top, bottom = max(0, int(y1 - grow_y)), min(height, int(np.ceil(y2 + grow_y)) + 1)
    left, right = max(0, int(x1 - grow_x)), min(width, int(np.ceil(x2 + grow_x)) + 1)
    if bottom <= top or right <= left:
        return (0, 1, 0, 1)  # the window is off the frame: nothing to read
    return top, bottom, left, right


def _same_size(windows: list[tuple[slice, slice]], level_h: int, level_w: int) -> list[tuple[slice, slice]]:
    """Grow every window to the largest height and width among them, inside the level, starts even."""
    height = max(r.stop - r.start for r, _ in windows)
    width = max(c.stop - c.start for _, c in windows)
    return [(_grow(r, height, level_h), _grow(c, width, level_w)) for r, c in windows]


def _grow(span: slice, size: int, level_len: int) -> slice:
    start = min(span.start, level_len - size)
    start -= start % PNET_STRIDE
    return slice(start, start + size)


def _covers(outer: tuple[slice, slice], inner: tuple[slice, slice]) -> bool:
    return all(o.start <= i.start and o.stop >= i.stop for o, i in zip(outer, inner, strict=True))


def _whole_windows(span: slice, level_len: int, n_out: int) -> int:
    """How many P-net outputs of a level window see only pixels inside it."""
    if span.stop >= level_len:
        return n_out
    return max(0, min(n_out, (span.stop - span.start - PNET_CELL) // PNET_STRIDE + 1))
