"""DVC stages `audio@<name>`, `embed@<name>` and plug-ins: run one registered extractor over the manifest."""

from __future__ import annotations

import logging

from avpipe.pipeline.config import Params
from avpipe.pipeline.extract import run_extractor, write_report
from avpipe.pipeline.manifest import ManifestRow, read_manifest
from avpipe.pipeline.results import stage_metrics, write_stage_metrics
from avpipe.pipeline.runner import RunReport

log = logging.getLogger(__name__)


def run(params: Params, name: str) -> int:
    """Extract ``name`` for every manifest video; write its report, failures and headline metrics."""
    _, report = extract_and_report(params, name)
    write_stage_metrics(params.results, name, stage_metrics(report))
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
    # each failure was logged once when it happened; the summary points at the full list
    log.info("%s", report.summary())
    if report.failures:
        log.info("%s: failures listed in %s/%s_failures.csv", name, params.runner.reports, name)
    return rows, report


def exit_code(params: Params, report: RunReport) -> int:
    """1 when nothing is stored at the end: the manifest was empty, or every video failed. Otherwise 0,
    unless some video failed and ``runner.fail_on_error`` asks for a failing exit."""
    stored = report.done + report.skipped
    if stored == 0:
        why = f"all {report.failed} videos failed" if report.failed else "the manifest lists no video"
        log.error(
            "%s: nothing extracted: %s (%s/%s_failures.csv)",
            report.stage,
            why,
            params.runner.reports,
            report.stage,
        )
        return 1
    if report.failures and params.runner.fail_on_error:
        log.error(
            "%s: %d of %d videos failed (runner.fail_on_error)",
            report.stage,
            report.failed,
            stored + report.failed,
        )
        return 1
    return 0
