"""``<runner.reports>/manifest_labels.json``: how often each label resampling or repair rule acted, over
the run and per video (the manifest's summary line logs the totals; each labels shard keeps its own)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

LABEL_REPORT = "manifest_labels.json"


def write_label_report(by_video: Mapping[str, Counter], reports_dir: str | Path) -> Path:
    """Write the report atomically; the totals sum every video's counts."""
    total: Counter = Counter()
    for counts in by_video.values():
        total.update(counts)
    document = {
        "total": dict(sorted(total.items())),
        "videos": {video: dict(sorted(c.items())) for video, c in sorted(by_video.items()) if c},
    }
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LABEL_REPORT
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
