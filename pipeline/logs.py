"""Log set-up of the ``avpipe`` command and of its Dask workers: useful lines, nothing twice, no noise.

``configure_logging`` runs once per command. ``quiet_dask_logs`` also runs in every worker process (the
extractor plugin's setup), where Dask logs the heartbeat errors of a cluster being closed on purpose.
"""

from __future__ import annotations

import logging

# Our own loggers; -v turns DEBUG on for these only, other libraries stay at INFO or above.
OWN_LOGGERS = ("avpipe",)
# What closing a LocalCluster logs about workers it shuts down on purpose: a heartbeat that raced the
# scheduler's exit (an ERROR with a traceback, in the worker) and the nanny's "still alive ... killing".
SHUTDOWN_NOISE = (
    "Failed to communicate with scheduler during heartbeat",
    "Worker process still alive after",
    "Heartbeat to scheduler failed",
)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.captureWarnings(True)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_dask_logs()


class DaskShutdownFilter(logging.Filter):
    """Drops Dask's shutdown noise; its other warnings (memory, lost workers) still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(noise) for noise in SHUTDOWN_NOISE)


def quiet_dask_logs() -> None:
    """Dask's scheduler and nanny log every connection at INFO: only its warnings and errors show,
    without the shutdown noise."""
    import distributed  # noqa: F401 - importing it sets up its loggers, which we then quiet

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logger = logging.getLogger(name)
            if logger.level < logging.WARNING:
                logger.setLevel(logging.WARNING)
            if not any(isinstance(f, DaskShutdownFilter) for f in logger.filters):
                logger.addFilter(DaskShutdownFilter())
