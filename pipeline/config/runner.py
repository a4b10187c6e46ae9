"""``runner`` section: the Dask cluster the extraction stages run on (docs/SCALING.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from avpipe.pipeline.errors import ConfigError


@dataclass
class RunnerConfig:
    """How per-video work is spread over Dask workers (docs/SCALING.md)."""

    n_workers: int = 2
    threads_per_worker: int = 1
    torch_threads: int = 1
    scheduler_address: str | None = None  # e.g. tcp://host:8786; None starts a LocalCluster
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fail_on_error: bool = False  # exit non-zero when any video failed
    reports: str = "data/reports"
    memory_limit: str = "auto"
    # Dask's statistical profiler in every LocalCluster worker (the dashboard's Profile page): it samples
    # every thread's stack each 10 ms, CPU taken from the extraction. Off unless you want that page.
    worker_profile: bool = False
    # Short videos are grouped into one Dask task of about this many seconds of media (videos as
    # long or longer run alone); 0 gives one task per video. docs/SCALING.md.
    task_seconds: float = 30.0
    # LocalCluster: worker deaths a task may witness before it is set aside and retried alone at the end
    # (Dask's allowed-failures; a cluster of your own uses its scheduler's setting).
    allowed_worker_deaths: int = 1
    # No task finished and no worker alive for this long: the remaining videos become failure rows.
    watchdog_s: float = 300.0
    # Videos whose frames have more pixels are refused (a failures row) by frame extractors: one decoded
    # RGB frame takes width x height x 3 bytes, several are in flight. Default: 8K UHD (7680 x 4320).
    max_pixels: int = 7680 * 4320
    # The LocalCluster's dashboard (bokeh) shows paths and logs: loopback only unless a host is named here.
    dashboard_address: str = "127.0.0.1:0"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.task_seconds) and self.task_seconds >= 0):
            raise ConfigError(
                "runner.task_seconds", f"must be >= 0 (0: one task per video), got {self.task_seconds}"
            )
        if self.allowed_worker_deaths < 0:
            raise ConfigError(
                "runner.allowed_worker_deaths", f"must be >= 0, got {self.allowed_worker_deaths}"
            )
        if not self.watchdog_s > 0:
            raise ConfigError("runner.watchdog_s", f"must be > 0 seconds, got {self.watchdog_s}")
        for key in ("n_workers", "threads_per_worker", "torch_threads", "max_pixels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"runner.{key}", f"must be >= 1, got {getattr(self, key)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError("runner.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.scheduler_address is not None and "://" not in self.scheduler_address:
            raise ConfigError(
                "runner.scheduler_address", f"must look like tcp://host:8786, got {self.scheduler_address!r}"
            )
