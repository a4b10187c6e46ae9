"""One openSMILE pass giving eGeMAPSv02 low-level descriptors and, optionally, windowed functionals.

``opensmile.Smile`` gives either the LLDs or one functionals vector per call. Calling it once per video
frame on a 4 s segment costs ~75 ms a call (far slower than real time at 25 fps), so this module drives
openSMILE's own C API (``opensmile.core.lib.OpenSMILE``, what ``Smile`` uses inside) with the shipped
eGeMAPSv02 config, two external sinks (LLD and functionals levels) and the functionals components in
``frameMode = list``: one window per requested interval of LLD frames, all computed in the same pass
from the whole-file LLD stream. The LLD rows are exactly those of ``Smile(...).process_signal``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avpipe.pipeline.errors import ExtractorError

log = logging.getLogger(__name__)

LLD_HOP = 0.010  # eGeMAPSv02 LLD frame step, seconds
LLD_LONGEST_FRAME = 0.060  # the pitch/voice-quality frame length, which sets the LLD count
MIN_LLD_PER_WINDOW = 3  # openSMILE's list mode refuses shorter intervals
SOURCE = "extsource"
SINKS = {"lld": "extsinklld", "func": "extsinkfunc"}


@dataclass(frozen=True)
class SmileResult:
    """LLD rows (N, 25) with centre times in seconds from sample 0; functionals (W, 88) or None."""

    lld: np.ndarray
    lld_times: np.ndarray
    lld_names: list[str]
    functionals: np.ndarray | None
    functional_names: list[str] | None


def expected_lld_count(n_samples: int, sample_rate: int) -> int:
    """LLD rows openSMILE emits for ``n_samples`` (measured: one more than the complete 60 ms frames)."""
    hop = round(LLD_HOP * sample_rate)
    longest = round(LLD_LONGEST_FRAME * sample_rate)
    if n_samples < longest:
        return 0
    return (n_samples - longest) // hop + 2


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as little-endian int16 PCM, the way opensmile.Smile feeds its source."""
    scaled = np.clip(samples.astype(np.float64) * 32768.0, -32768, 32767)
    return scaled.astype("<i2").tobytes()


def run_egemaps(samples: np.ndarray, sample_rate: int, windows: np.ndarray | None = None) -> SmileResult:
    """eGeMAPSv02 LLDs of ``samples`` and functionals over ``windows`` ((W, 2) inclusive LLD-row ranges).

    Windows must be non-decreasing in both bounds and at least MIN_LLD_PER_WINDOW rows long. If
    openSMILE emits fewer functional rows than windows (a window past the last LLD row), the missing
    tail repeats the last emitted row.
    """
    import opensmile
    from opensmile.core.lib import OpenSMILE

    config_root = Path(opensmile.__file__).parent / "core" / "config"
    with tempfile.TemporaryDirectory(prefix="avpipe-smile-") as tmp:
        options = {
            "source": str(config_root / "shared" / "standard_external_wave_input.conf.inc"),
            "sampleRate": sample_rate,
            "nBits": 16,
            "bufferModeRbConf": str(config_root / "shared" / "BufferModeRb.conf.inc"),
        }
        sinks = {"lld": SINKS["lld"]}
        if windows is None:
            options["sink"] = str(config_root / "shared" / "standard_external_data_output_single.conf.inc")
            options["sinkLevel"] = "lld"
            sinks = {"lld": "extsink"}
        else:
            options["sink"] = str(config_root / "shared" / "standard_external_data_output_multi.conf.inc")
            options["sinkLevelLLD"] = "lld"
            options["sinkLevelFunc"] = "func"
            options["frameModeFunctionalsConf"] = str(_write_window_config(Path(tmp), windows))
            sinks["func"] = SINKS["func"]
        rows = _run(
            OpenSMILE(), str(config_root / "egemaps" / "v02" / "eGeMAPSv02.conf"), options, sinks, samples
        )
    lld, lld_times, lld_names = rows["lld"]
    functionals, functional_names = None, None
    if windows is not None:
        functionals, _, functional_names = rows["func"]
        functionals = _complete(functionals, windows.shape[0])
    return SmileResult(lld, lld_times, lld_names, functionals, functional_names)


def _write_window_config(folder: Path, windows: np.ndarray) -> Path:
    """The include that puts every eGeMAPS functionals component in list mode over ``windows``."""
    if windows.ndim != 2 or windows.shape[1] != 2 or windows.shape[0] == 0:
        raise ValueError(f"windows must be a non-empty (W, 2) array, got shape {windows.shape}")
    if np.any(windows[:, 1] - windows[:, 0] < MIN_LLD_PER_WINDOW - 1) or np.any(windows[:, 0] < 0):
        raise ValueError(f"every window must span >= {MIN_LLD_PER_WINDOW} LLD rows from row 0 on")
    list_path = folder / "windows.txt"
    list_path.write_text(",".join(f"{a}-{b}" for a, b in windows.tolist()) + "\n", encoding="ascii")
    conf_path = folder / "list_functionals.conf.inc"
    conf_path.write_text(
        "frameMode = list\n"
        f"frameListFile = {list_path}\n"
        "frameSize = 0\nframeStep = 0\nframeCenterSpecial = left\n",
        encoding="ascii",
    )
    return conf_path


def _run(
    smile: object, config: str, options: dict, sinks: dict[str, str], samples: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    collected: dict[str, tuple[list, list]] = {key: ([], []) for key in sinks}

    def collector(key: str):
        values, times = collected[key]

        def on_frame(data: np.ndarray, meta: object) -> None:
            values.append(np.array(data, dtype=np.float32).reshape(-1))
            times.append(meta.time + meta.lengthSec / 2.0)

        return on_frame

    try:
        smile.initialize(config, options, loglevel=1)
    except Exception as err:  # openSMILE reports config and setup problems as its own exception type
        raise ExtractorError(f"openSMILE could not load eGeMAPSv02 ({config}): {err}") from err
    try:
        names = {
            key: [
                smile.external_sink_get_element_name(sink, i)
                for i in range(smile.external_sink_get_num_elements(sink))
            ]
            for key, sink in sinks.items()
        }
        for key, sink in sinks.items():
            smile.external_sink_set_callback_ex(sink, collector(key))
        smile.external_audio_source_write_data(SOURCE, to_pcm16(samples))
        smile.external_audio_source_set_eoi(SOURCE)
        smile.run()
    finally:
        smile.free()
    out = {}
    for key in sinks:
        values, times = collected[key]
        width = len(names[key])
        array = np.stack(values) if values else np.zeros((0, width), dtype=np.float32)
        out[key] = (array, np.asarray(times, dtype=np.float64), names[key])
    return out


def _complete(rows: np.ndarray, n_windows: int) -> np.ndarray:
    if rows.shape[0] >= n_windows:
        return rows[:n_windows]
    if rows.shape[0] == 0:
        raise ExtractorError(f"openSMILE produced no functionals for {n_windows} windows")
    log.debug("openSMILE emitted %d of %d functional windows; repeating the last", rows.shape[0], n_windows)
    tail = np.repeat(rows[-1:], n_windows - rows.shape[0], axis=0)
    return np.concatenate([rows, tail])
