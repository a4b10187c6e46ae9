"""DVC stage `faces`: face crops of every manifest video into the store, QA sheets, summary metrics.

Outputs besides the shards (``<store.root>/faces/``): ``data/qa/faces/<video>.png`` contact sheets
and ``<runner.reports>/faces_metrics.json`` (per video: frames detected/tracked/held/missing and what
the tracker's searches did; frames per second of the whole stage, contact sheets included); the headline
(videos, failures, speed, mean and lowest detection rate, identity-gate rejections) goes to
``<results.dir>/metrics/faces.json`` for ``dvc metrics``; the run report and failures CSV come from
``avpipe.pipeline.extract.write_report``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from avpipe.pipeline import atomic
from avpipe.pipeline.atomic import OutputWriteError
from avpipe.pipeline.config import Params
from avpipe.pipeline.errors import StoreError
from avpipe.pipeline.extract import FACES_EXTRACTOR, open_store
from avpipe.pipeline.extractors.faces.qa import load_sheet_data, video_summary, write_contact_sheet
from avpipe.pipeline.manifest import ManifestRow
from avpipe.pipeline.results import stage_metrics, write_stage_metrics
from avpipe.pipeline.runner import RunReport
from avpipe.pipeline.store import FeatureStore, shard_name
from avpipe.stages.extract import exit_code, extract_and_report

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
    headline = {
        key: metrics[key] for key in ("mean_detection_rate", "min_detection_rate", "identity_rejections")
    }
    write_stage_metrics(params.results, FACES_EXTRACTOR, {**stage_metrics(report), **headline})
    return exit_code(params, report)


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
