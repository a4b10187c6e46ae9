"""DVC stages `audio@<name>`, `embed@<name>` and plug-ins: run one registered extractor over the manifest."""

from __future__ import annotations

import logging

from pipeline.extract import run_extractor, write_report
from pipeline.manifest import ManifestRow, read_manifest
from pipeline.params import Params
from pipeline.runner import RunReport

log = logging.getLogger(__name__)


def run(params: Params, name: str) -> int:
    """Extract ``name`` for every manifest video; report failures; exit 1 only if runner.fail_on_error."""
    _, report = extract_and_report(params, name)
    return exit_code(params, report)


def extract_and_report(params: Params, name: str) -> tuple[list[ManifestRow], RunReport]:
    """Run extractor ``name`` over the manifest, write its run report and failures CSV, log a summary."""
    rows = read_manifest(params.manifest.path)
    report = run_extractor(
        name,
        params.extractor_config(name),
        rows,
        params.store,
        params.runner,
        fps=params.dataset.fps,
        audio_fps=params.dataset.audio_fps,
    )
    write_report(report, params.runner.reports)
    log.info("%s", report.summary())
    for failure in report.failures:
        log.warning("failed: %s: %s", failure.video, failure.reason)
    return rows, report


def exit_code(params: Params, report: RunReport) -> int:
    """0 unless some video failed and ``runner.fail_on_error`` asks for a failing exit."""
    return 1 if report.failures and params.runner.fail_on_error else 0
