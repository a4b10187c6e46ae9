"""The ``avpipe`` command: one sub-command per DVC stage, plus tools to inspect config and extractors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import yaml

from pipeline import __version__
from pipeline.errors import AvpipeError

log = logging.getLogger("avpipe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avpipe",
        description="Audio-visual feature extraction and training for continuous emotion recognition. "
        "Every command reads params.yaml (validated once) and accepts --set key=value overrides.",
    )
    parser.add_argument("--version", action="version", version=f"avpipe {__version__}")
    parser.add_argument(
        "-p", "--params", default="params.yaml", help="parameters file (default: params.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set runner.n_workers=4 (repeatable; VALUE is read as YAML)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("demo", help="build the synthetic demo dataset (params: demo)")
    sub.add_parser("manifest", help="probe the dataset, write the manifest, failures and per-frame labels")
    sub.add_parser("faces", help="detect, track and align faces; crops into the store; QA contact sheets")
    p = sub.add_parser(
        "audio", help="one audio feature (logmel, mfcc, egemaps, vggish) for every manifest video"
    )
    p.add_argument("name", help="an audio extractor listed in audio.extractors")
    p = sub.add_parser("embed", help="face embeddings of one backbone from the face crops")
    p.add_argument("name", help="a face-embedding extractor listed in embed.backbones")
    p = sub.add_parser("extract", help="run any registered extractor (e.g. a plug-in) over the manifest")
    p.add_argument("name", help="extractor name, see `avpipe extractors list`")
    p = sub.add_parser("extractors", help="inspect the extractor registry")
    p.add_argument("action", choices=["list"], help="list: every extractor with its input and origin")
    p = sub.add_parser("config", help="show the validated configuration")
    p.add_argument("action", choices=["show"], help="show: print the resolved parameters as YAML")
    sub.add_parser("train", help="train the configured model with k-fold cross-validation on cached features")
    sub.add_parser("evaluate", help="merge fold predictions, compute metrics.json and plot data")
    p = sub.add_parser("predict", help="write per-frame predictions per video as CSV")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_dask_logs(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return dispatch(args)
    except AvpipeError as err:
        log.error("%s", err)
        return 2


def quiet_dask_logs(level: int) -> None:
    """Dask's scheduler and nanny log every connection at INFO; our own progress bar says enough."""
    import distributed  # noqa: F401 - importing it sets up its loggers, which we then quiet

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def dispatch(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    if args.command == "extractors":
        return list_extractors()
    if args.command == "convert-checkpoint":
        return convert_checkpoint(args.source, args.target, args.trust_pickle)
    params = load_params(args.params, args.overrides)
    if args.command == "config":
        sys.stdout.write(yaml.safe_dump(to_plain(params), sort_keys=False))
        return 0
    if args.command == "demo":
        from stages import demo

        return demo.run(params)
    if args.command == "manifest":
        from stages import manifest

        return manifest.run(params)
    if args.command == "faces":
        from stages import faces

        return faces.run(params)
    if args.command == "audio":
        from stages import audio

        return audio.run(params, args.name)
    if args.command == "embed":
        from stages import embed

        return embed.run(params, args.name)
    if args.command == "extract":
        from stages import extract

        return extract.run(params, args.name)
    if args.command == "verify":
        from stages import verify

        return verify.run(params, args.extractors, remove_corrupt=args.remove_corrupt)
    if args.command == "train":
        from stages import train

        return train.run(params)
    if args.command == "evaluate":
        from stages import evaluate

        return evaluate.run(params)
    if args.command == "predict":
        from stages import predict

        return predict.run(params, out=args.out, split=args.split)
    raise AssertionError(f"unhandled command {args.command}")


def convert_checkpoint(source: str, target: str, trust_pickle: bool) -> int:
    from pipeline.checkpoints import convert_checkpoint as convert

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
    from pipeline.registry import default_registry

    registry = default_registry()
    rows = [("name", "input", "dim", "origin", "description")]
    for cls in registry:
        try:
            dim = str(cls().feature_dim)
        except AvpipeError:
            dim = "?"
        rows.append((cls.name, cls.input_kind.value, dim, registry.origins[cls.name], cls.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
        sys.stdout.write(f"{line}  {row[4]}\n")
    return 0


def to_plain(obj: object) -> object:
    """Dataclasses and enums -> plain YAML-able values."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(main())
