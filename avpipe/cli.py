"""The ``avpipe`` command: one sub-command per DVC stage, plus tools to inspect config and extractors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from avpipe import __version__
from avpipe.pipeline.errors import AvpipeError
from avpipe.pipeline.logs import configure_logging

log = logging.getLogger("avpipe")

# The registries `avpipe <kind> list` shows besides the extractors: command -> what one entry is.
LISTED_KINDS = {"models": "model", "adapters": "dataset adapter", "losses": "loss"}
REFUSED = "REFUSED:"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avpipe",
        description="Audio-visual feature extraction and training for continuous emotion recognition. "
        "Every command reads params.yaml (validated once) and accepts --set key=value overrides, "
        "before or after the command name.",
    )
    parser.add_argument("--version", action="version", version=f"avpipe {__version__}")
    _add_common_options(parser, default=True)
    # The same options after the sub-command (``avpipe faces --set k=v``); SUPPRESS keeps the values
    # given before it when they are not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common])

    p = command("demo", "build the synthetic demo dataset (params: demo)")
    p.add_argument(
        "--only-if-dataset",
        action="store_true",
        help="build only when dataset.root is demo.root; else leave a marker there (what dvc.yaml runs)",
    )
    command("manifest", "probe the dataset, write the manifest, failures and per-frame labels")
    command("faces", "detect and track faces; landmark-warped crops into the store; QA contact sheets")
    p = command("audio", "one audio feature (logmel, mfcc, egemaps, vggish) for every manifest video")
    p.add_argument("name", help="an audio extractor listed in audio.extractors")
    p = command("embed", "face embeddings of one backbone from the face crops")
    p.add_argument("name", help="a face-embedding extractor listed in embed.backbones")
    p = command("extract", "run any registered extractor (e.g. a plug-in) over the manifest")
    p.add_argument("name", help="extractor name, see `avpipe extractors list`")
    p = command(
        "extract-file",
        "extract features of one media file, without DVC or a store, into a table file (docs/API.md)",
    )
    p.add_argument("video", help="the media file")
    p.add_argument(
        "--features",
        default="faces,logmel,egemaps",
        help="comma-separated extractor names (default: faces,logmel,egemaps)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output file: .parquet, .csv or .npy (one row per frame, named columns) or .npz (every array, "
        "face crops included)",
    )
    p.add_argument("--video-id", default=None, help="the id the extractors see (default: the file name stem)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p = command("export", "write the store's features as parquet, csv, npy or npz files (docs/API.md)")
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--format",
        choices=["parquet", "csv", "npy", "npz"],
        default="parquet",
        help="parquet/csv: <out>/<feature>.<format>, one table with a video_id column; npy/npz: "
        "<out>/<feature>/<video>.<format> per video (default: parquet)",
    )
    p.add_argument("--features", default=None, help="comma-separated features (default: all in the store)")
    p.add_argument(
        "--video", action="append", dest="videos", metavar="ID", help="only this video (repeatable)"
    )
    p.add_argument("--store", default=None, help="the store's folder (default: store.root of the params)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    p = command("extractors", "inspect the extractor registry")
    p.add_argument("action", choices=["list"], help="list: every extractor with its input and origin")
    for kind, what in LISTED_KINDS.items():
        p = command(kind, f"inspect the {what} registry (built-in and plug-ins)")
        p.add_argument("action", choices=["list"], help=f"list: every {what} with its origin and description")
    p = command("config", "show the validated configuration")
    p.add_argument("action", choices=["show"], help="show: print the resolved parameters as YAML")
    command(
        "train-config",
        "write the resolved train params (preset + overrides, results.dir/train_params.yaml) and the "
        "list of shards train reads (results.train_inputs)",
    )
    command("train", "train the configured model with k-fold cross-validation on cached features")
    command("evaluate", "merge fold predictions; metrics and plot data (train.eval_dir, results.dir)")
    p = command("predict", "write per-frame predictions per video as CSV")
    p.add_argument("--out", default=None, help="output folder (default: train.predictions_dir)")
    p.add_argument("--split", default=None, help="only videos of this split (default: all in the manifest)")
    p = sub.add_parser(
        "convert-checkpoint",
        help="rewrite a legacy torch checkpoint (pickled module, numpy arrays) as a tensors-only file",
        description="Read SOURCE and write its tensors (a module's state_dict, numpy arrays as tensors) "
        "to TARGET, a file avpipe loads without unpickling. Files holding other Python objects need full "
        "unpickling, which runs any code stored in them: that happens only with --trust-pickle. "
        "TARGET is never overwritten.",
    )
    p.add_argument("source", help="the checkpoint to read")
    p.add_argument("target", help="the tensors-only file to write (must not exist)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow full unpickling of SOURCE (runs code the file holds: only for files you trust)",
    )
    p = sub.add_parser(
        "verify",
        help="read every shard of the store in full (checksums), report or remove bad ones, rebuild indexes",
    )
    p.add_argument("extractors", nargs="*", help="extractor folders to check (default: all in store.root)")
    p.add_argument(
        "--remove-corrupt",
        action="store_true",
        help="delete the corrupt shards (default: only report them; a re-run recomputes removed ones)",
    )
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    def unset(value: object) -> object:
        return value if default else argparse.SUPPRESS

    parser.add_argument(
        "-p", "--params", default=unset("params.yaml"), help="parameters file (default: params.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides" if default else "more_overrides",
        action="append",
        default=[] if default else argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set runner.n_workers=4 (repeatable; VALUE is read as YAML)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=unset(False), help="debug logging of avpipe"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *getattr(args, "more_overrides", [])]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        return dispatch(args)
    except AvpipeError as err:
        log.error("%s", err)
        return 2


def dispatch(args: argparse.Namespace) -> int:
    from avpipe.pipeline.config import load_params
    from avpipe.pipeline.config.build import to_plain

    if args.command == "extractors":
        return list_extractors()
    if args.command in LISTED_KINDS:
        return list_registry(args.command)
    if args.command == "convert-checkpoint":
        return convert_checkpoint(args.source, args.target, args.trust_pickle)
    if args.command in ("extract-file", "export"):
        return extract_or_export(args)
    params = load_params(args.params, args.overrides)
    if args.command == "config":
        sys.stdout.write(yaml.safe_dump(to_plain(params), sort_keys=False))
        return 0
    if args.command == "demo":
        from avpipe.stages import demo

        return demo.run(params, only_if_dataset=args.only_if_dataset)
    if args.command == "manifest":
        from avpipe.stages import manifest

        return manifest.run(params)
    if args.command == "faces":
        from avpipe.stages import faces

        return faces.run(params)
    if args.command == "audio":
        from avpipe.stages import audio

        return audio.run(params, args.name)
    if args.command == "embed":
        from avpipe.stages import embed

        return embed.run(params, args.name)
    if args.command == "extract":
        from avpipe.stages import extract

        return extract.run(params, args.name)
    if args.command == "train-config":
        from avpipe.stages import train_config

        return train_config.run(params)
    if args.command == "verify":
        from avpipe.stages import verify

        return verify.run(params, args.extractors, remove_corrupt=args.remove_corrupt)
    if args.command == "train":
        from avpipe.stages import train

        return train.run(params)
    if args.command == "evaluate":
        from avpipe.stages import evaluate

        return evaluate.run(params)
    if args.command == "predict":
        from avpipe.stages import predict

        return predict.run(params, out=args.out, split=args.split)
    raise AssertionError(f"unhandled command {args.command}")


def params_or_defaults(args: argparse.Namespace) -> Any:
    """The params file; for the library commands, the built-in defaults when the default params.yaml
    is not in the working folder (``avpipe extract-file`` works anywhere)."""
    from avpipe.pipeline.config import DEFAULT_PARAMS, load_params, params_from_dict

    if args.params == DEFAULT_PARAMS and not Path(DEFAULT_PARAMS).is_file():
        log.info("no %s in %s: built-in parameter defaults", DEFAULT_PARAMS, Path.cwd())
        return params_from_dict({}, args.overrides)
    return load_params(args.params, args.overrides)


def extract_or_export(args: argparse.Namespace) -> int:
    """``avpipe extract-file`` and ``avpipe export``."""
    from avpipe.pipeline import export

    params = params_or_defaults(args)
    if args.command == "export":
        from avpipe.pipeline.store import FeatureStore

        store = FeatureStore(args.store or params.store.root)
        report = export.export_store(
            store, args.out, args.format, split_names(args.features), args.videos, overwrite=args.overwrite
        )
        log.info("%s", report.summary())
        return 0
    from avpipe.pipeline.extract_file import extract

    out = Path(args.out)
    export.file_format(out)
    export.check_free([out], args.overwrite)  # before minutes of extraction, not after
    result = extract(args.video, split_names(args.features), params=params, video_id=args.video_id)
    export.write_extracted(result, out, overwrite=args.overwrite)
    rows = {name: len(features) for name, features in result.feature_sets.items()}
    log.info("wrote %s: %s", out, ", ".join(f"{name} {n} rows" for name, n in rows.items()))
    return 0


def split_names(text: str | None) -> list[str] | None:
    """``"faces, logmel"`` -> ``["faces", "logmel"]``; None stays None."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise AvpipeError(f"no feature names in {text!r}")
    return names


def convert_checkpoint(source: str, target: str, trust_pickle: bool) -> int:
    from avpipe.pipeline.checkpoints import convert_checkpoint as convert

    done = convert(source, target, trust_pickle=trust_pickle)
    how = "full unpickling (--trust-pickle)" if done.full_unpickling else "safe loading (no code ran)"
    log.info(
        "read %s by %s; wrote %d tensors to %s, which loads without unpickling",
        done.source,
        how,
        done.tensors,
        done.target,
    )
    return 0


def list_extractors() -> int:
    from avpipe.pipeline.registry import default_registry

    rows = [["name", "input", "dim", "origin", "description"]]
    for row in default_registry().listing():
        described = f"{REFUSED} {row.problem}" if row.problem else row.description
        if row.item is None:
            rows.append([row.name, "-", "-", row.origin, described])
            continue
        try:
            dim = str(row.item().feature_dim)
        except Exception:  # a plug-in's default config that does not build must not stop the listing
            dim = "?"
        rows.append([row.name, row.item.input_kind.value, dim, row.origin, described])
    write_table(rows)
    return 0


def list_registry(kind: str) -> int:
    """``avpipe models|adapters|losses list``: name, origin, description (losses: what they train)."""
    if kind == "models":
        from avpipe.models.registry import model_registry

        registry = model_registry()
    elif kind == "adapters":
        from avpipe.pipeline.adapters import adapter_registry

        registry = adapter_registry()
    else:
        from avpipe.models.losses import loss_registry

        registry = loss_registry()
    with_targets = kind == "losses"
    rows = [["name", *(["trains"] if with_targets else []), "origin", "description"]]
    for row in registry.listing():
        targets = []
        if with_targets:
            targets = [",".join(t.value for t in row.item.targets) if row.item is not None else "-"]
        described = f"{REFUSED} {row.problem}" if row.problem else row.description
        rows.append([row.name, *targets, row.origin, described])
    write_table(rows)
    return 0


def write_table(rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the last column (descriptions) is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        sys.stdout.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
