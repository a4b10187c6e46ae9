"""DVC stage `manifest`: the dataset's videos, probed, with their labels aligned to the frames.

The work is :func:`avpipe.pipeline.manifest_builder.build_manifest`; this shell writes the reports and
decides the exit code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from avpipe.pipeline.label_report import write_label_report
from avpipe.pipeline.manifest_builder import build_manifest

if TYPE_CHECKING:
    from avpipe.pipeline.config import Params

log = logging.getLogger(__name__)


def run(params: Params) -> int:
    """The ``avpipe manifest`` command: exit 1 when no video is usable (none found, or all failed), or
    when something failed and runner.fail_on_error."""
    from avpipe.pipeline.results import write_stage_metrics

    report = build_manifest(params.dataset, params.manifest, params.store, params.runner)
    write_label_report(report.label_actions_by_video, params.runner.reports)
    write_stage_metrics(
        params.results,
        "manifest",
        {"videos": len(report.rows), "failed": len(report.failures), "labels_written": report.labels_written},
    )
    if not report.rows:
        why = f"all {len(report.failures)} failed" if report.failures else "the dataset holds none"
        log.error(
            "manifest: no usable video in %s: %s (%s)", params.dataset.root, why, params.manifest.failures
        )
        return 1
    if report.failures and params.runner.fail_on_error:
        log.error("manifest: %d videos failed (runner.fail_on_error)", len(report.failures))
        return 1
    return 0
