"""Random kills of an audio stage's driver, then a re-run: nothing lost, nothing left behind.

    .venv/bin/python -m bench.random_kills [--clips 100] [--kills 8] [--workers 2] [--seed 0]

Builds ``--clips`` short real clips (lavfi test pattern + tone, 1-2 s) and runs ``avpipe extract
logmel`` on them once without interruption (the reference). Then, in another folder, it starts the
stage ``--kills`` times and SIGKILLs it (by PID, its whole process group: driver, LocalCluster nannies
and workers) at a random moment while shards are being written: after a random number of new shards
(up to twice an even share of those left) plus a random fraction of a second. A last run goes to the
end. Checks, each printed as PASS or FAIL (exit 1 on any FAIL):

- every clip has a shard, and the index lists every shard on disk;
- no temp file is left (``.*.tmp.h5`` shards, ``.index.json.*.tmp``);
- every stored array equals the uninterrupted run's.

Takes a few minutes (each start pays a LocalCluster start-up). docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from avpipe.pipeline.manifest import ManifestRow, write_manifest
from avpipe.pipeline.store import INDEX_FILE, FeatureStore

log = logging.getLogger("bench.random_kills")

EXTRACTOR = "logmel"
REPO = Path(__file__).resolve().parents[1]
CLI = "import sys; from avpipe.cli import main; sys.exit(main(sys.argv[1:]))"
STAGE_TIMEOUT_S = 900.0


def make_clips(folder: Path, count: int, rng: random.Random) -> list[ManifestRow]:
    from tests.media_factory import make_video

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        seconds = round(1.0 + rng.random(), 2)
        path = make_video(folder / f"clip {index:03d}.mp4", seconds=seconds, fps=10, size=(32, 24))
        rows.append(ManifestRow(video_id=f"clip {index:03d}", media_path=str(path), duration=seconds))
    return rows


def write_params(folder: Path, rows: list[ManifestRow], workers: int) -> Path:
    write_manifest(rows, folder / "manifest.csv")
    params = {
        "manifest": {"path": str(folder / "manifest.csv"), "failures": str(folder / "manifest_failures.csv")},
        "store": {"root": str(folder / "features")},
        "runner": {"n_workers": workers, "reports": str(folder / "reports"), "device": "cpu"},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def start_stage(params: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", CLI, "-p", str(params), "extract", EXTRACTOR]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )


def kill_at_random(params: Path, store: FeatureStore, total: int, kills_left: int, rng: random.Random) -> str:
    """Start the stage, SIGKILL its process group at a random moment of its writing; say when."""
    before = len(store.shard_files(EXTRACTOR))
    share = max(1, (total - before) // max(1, kills_left))
    target = before + rng.randint(1, 2 * share)
    extra = rng.uniform(0.0, 0.5)
    stage = start_stage(params)
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while stage.poll() is None and time.monotonic() < deadline:
        if len(store.shard_files(EXTRACTOR)) >= min(target, total):
            time.sleep(extra)
            break
        time.sleep(0.02)
    if stage.poll() is not None:
        return f"found it ended by itself (exit {stage.returncode})"
    os.killpg(stage.pid, signal.SIGKILL)
    stage.wait()
    return f"after {target - before} new shards + {extra:.2f} s"


def check(store: FeatureStore, ref: FeatureStore, rows: list[ManifestRow]) -> list[tuple[str, bool, str]]:
    folder = store.folder(EXTRACTOR)
    on_disk = {p.name for p in store.shard_files(EXTRACTOR)}
    index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))["videos"]
    indexed = {entry["shard"] for entry in index.values()}
    expected = {store.shard_path(EXTRACTOR, r.video_id).name for r in rows}
    temps = sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)
    different = []
    for row in rows:
        got, want = store.read(EXTRACTOR, row.video_id), ref.read(EXTRACTOR, row.video_id)
        same = all(
            np.array_equal(getattr(got, name), getattr(want, name))
            for name in ("time", "frame_index", "mask")
        ) and np.array_equal(got.arrays["features"], want.arrays["features"])
        if not same:
            different.append(row.video_id)
    return [
        ("every clip has a shard", on_disk >= expected, f"{len(expected - on_disk)} missing"),
        ("the index lists every shard", indexed == on_disk, f"{len(on_disk - indexed)} shards not indexed"),
        ("no temp files left", not temps, ", ".join(temps[:5])),
        ("arrays identical to an uninterrupted run", not different, ", ".join(different[:5])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="avpipe-kills-") as tmp:
        folder = Path(tmp)
        rows = make_clips(folder / "media", args.clips, rng)
        params = write_params(folder, rows, args.workers)
        # The uninterrupted run, in its own folder: the reference, and the span the kills land in.
        started = time.perf_counter()
        timing = write_params(folder / "timing", rows, args.workers)
        subprocess.run(
            [sys.executable, "-c", CLI, "-p", str(timing), "extract", EXTRACTOR],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            check=True,
            timeout=STAGE_TIMEOUT_S,
        )
        full_run_s = time.perf_counter() - started
        log.info("uninterrupted run: %.1f s for %d clips", full_run_s, len(rows))
        ref = FeatureStore(folder / "timing" / "features")
        store = FeatureStore(folder / "features")
        for kill in range(args.kills):
            when = kill_at_random(params, store, len(rows), args.kills - kill, rng)
            shards = len(store.shard_files(EXTRACTOR))
            log.info("kill %d %s: %d shards on disk", kill + 1, when, shards)
        final = start_stage(params)
        final.wait(timeout=STAGE_TIMEOUT_S)
        log.info("re-run exit code %d", final.returncode)
        results = check(store, ref, rows)
    for name, ok, detail in results:
        log.info("%s %s%s", "PASS" if ok else "FAIL", name, "" if ok else f" ({detail})")
    return 0 if all(ok for _, ok, _ in results) and final.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
