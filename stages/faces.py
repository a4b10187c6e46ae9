"""DVC stage `faces`: face crops of every manifest video into the store, QA sheets, summary metrics.

Outputs besides the shards (``<store.root>/faces/``): ``data/qa/faces/<video>.png`` contact sheets
and ``<runner.reports>/faces_metrics.json`` (detection rate per video, frames per second) for
``dvc metrics show``; the run report and failures CSV come from ``pipeline.extract.write_report``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline import atomic
from pipeline.atomic import OutputWriteError
from pipeline.errors import StoreError
from pipeline.extract import FACES_EXTRACTOR, open_store
from pipeline.extractors.faces.qa import detection_summary, write_contact_sheet
from pipeline.manifest import ManifestRow
from pipeline.params import Params
from pipeline.runner import RunReport
from pipeline.store import FeatureStore, shard_name
from stages.extract import exit_code, extract_and_report

log = logging.getLogger(__name__)

QA_DIR = Path("data/qa/faces")
METRICS_FILE = "faces_metrics.json"


def run(params: Params, qa_dir: str | Path = QA_DIR) -> int:
    """Extract faces for every manifest video, then write the QA sheets and the metrics JSON."""
    rows, report = extract_and_report(params, FACES_EXTRACTOR)
    metrics = write_qa(open_store(params.store), rows, report, Path(qa_dir), Path(params.runner.reports))
    log.info(
        "faces: mean detection rate %.3f over %d videos", metrics["mean_detection_rate"], metrics["videos"]
    )
    return exit_code(params, report)


def write_qa(
    store: FeatureStore, rows: list[ManifestRow], report: RunReport, qa_dir: Path, reports_dir: Path
) -> dict[str, Any]:
    """One contact sheet per stored video and the stage metrics; returns the metrics written."""
    per_video: dict[str, Any] = {}
    sheets_not_written = 0
    for row in rows:
        try:
            _, _, mask = store.get(FACES_EXTRACTOR, row.video_id, "prob")
        except StoreError as err:  # failed this run: its reason is in the failures report
            log.debug("no QA for %s: %s", row.video_id, err)
            continue
        try:
            write_contact_sheet(store, row.video_id, qa_dir / sheet_name(row.video_id))
        except OutputWriteError as err:  # a full disk costs the picture, not the stage
            log.warning("no QA contact sheet for %s: %s", row.video_id, err)
            sheets_not_written += 1
        per_video[row.video_id] = detection_summary(mask)
    rates = [v["detection_rate"] for v in per_video.values()]
    metrics = {
        "videos": len(per_video),
        "failed": report.failed,
        "frames_extracted": report.frames,
        "frames_per_second": round(report.frames_per_second, 2),
        "mean_detection_rate": round(sum(rates) / len(rates), 4) if rates else 0.0,
        "min_detection_rate": min(rates) if rates else 0.0,
        "qa_sheets_not_written": sheets_not_written,
        "per_video": per_video,
    }
    atomic.write_text(reports_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def sheet_name(video_id: str) -> str:
    """``<video>.png``, with the store's file-name escaping for ids that need it."""
    return shard_name(video_id).removesuffix(".h5") + ".png"
