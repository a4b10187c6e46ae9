"""DVC stage `faces`: face crops of every manifest video into the store, QA sheets, summary metrics.

Outputs besides the shards (``<store.root>/faces/``): ``data/qa/faces/<video>.png`` contact sheets
and ``<runner.reports>/faces_metrics.json`` (per video: frames detected/tracked/held/missing and what
the tracker's searches did; frames per second of the whole stage, contact sheets included); the headline
(videos, failures, speed, mean and lowest detection rate, identity-gate rejections) goes to
``<results.dir>/metrics/faces.json`` for ``dvc metrics``; the run report and failures CSV come from
``avpipe.pipeline.extract.write_report``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from avpipe.pipeline.config import Params
from avpipe.pipeline.extract import FACES_EXTRACTOR, open_store
from avpipe.pipeline.extractors.faces.qa import write_qa
from avpipe.pipeline.results import stage_metrics, write_stage_metrics
from avpipe.stages.extract import exit_code, extract_and_report

log = logging.getLogger(__name__)

QA_DIR = Path("data/qa/faces")


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
