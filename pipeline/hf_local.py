"""Hugging Face checkpoints from local disk only: a ``save_pretrained`` folder or the local HF cache.

avpipe never downloads weights at run time; a repo id is accepted only when its snapshot is already in
the cache (``huggingface-cli download`` once, by hand), and the error names the folder it looked for.
"""

from __future__ import annotations

from pathlib import Path

from avpipe.pipeline.errors import ExtractorError


def resolve_local_model(model: str, extractor: str) -> Path:
    """The folder of ``model``: itself when it is a folder, else its snapshot in the local HF cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExtractorError(
                f"{extractor}: {path} has no config.json (a save_pretrained directory is expected)"
            )
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        raise ExtractorError(
            f"{extractor}: the model directory {path} does not exist (give a save_pretrained directory, "
            "or a Hugging Face repo id already in the local cache)"
        )
    from huggingface_hub import constants, snapshot_download

    expected = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}"
    try:
        return Path(snapshot_download(model, local_files_only=True, cache_dir=constants.HF_HUB_CACHE))
    except Exception as err:  # LocalEntryNotFoundError and friends: nothing cached
        raise ExtractorError(
            f"{extractor}: {model!r} is neither a local directory nor in the local Hugging Face cache "
            f"(expected {expected}); avpipe never downloads weights: fetch them once with "
            f"`huggingface-cli download {model}` or save_pretrained into a directory"
        ) from err
