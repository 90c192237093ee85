"""The `edgekit convert` and `edgekit stream` verbs: model rewrites, and streaming samples through a
window CNN hop by hop. Converters load lazily inside the verbs so `edgekit --help` stays instant.

Converters never import the runtime; where a report runs models (`--binarize --report` times
layers, `--stream --report` measures the streaming error), this module hands them the public
``edgekit.InferenceSession`` (layers timed by ``edgekit.benchmarks.timing.median_seconds``).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from typing import Any, Iterator, TextIO

import numpy as np

from .cli_args import non_negative_int, positive_int
from .errors import InputError


def cmd_convert(args: argparse.Namespace) -> int:
    chosen = [flag for flag, on in (("--stream", args.stream), ("--binarize", args.binarize),
                                    ("--paramfree", args.paramfree)) if on]
    if len(chosen) != 1:
        print("edgekit convert: choose exactly one of --stream, --binarize, --paramfree", file=sys.stderr)
        return 2
    if args.data and not (args.stream and args.report):
        print("edgekit convert: --data is the signal of --stream --report", file=sys.stderr)
        return 2
    mst = "force" if args.mst_force else "auto" if args.mst else None
    if (mst or args.mst_depth is not None) and not args.binarize:
        print("edgekit convert: --mst, --mst-force and --mst-depth go with --binarize", file=sys.stderr)
        return 2
    if args.mst_depth is not None and not (mst or args.report):
        print("edgekit convert: --mst-depth bounds the trees of --mst (or of --report's MST estimate)", file=sys.stderr)
        return 2
    if args.binarize:
        return _convert_binary(args.model, args.output, mst, args.mst_depth, args.report)
    if args.paramfree:
        from .converters.paramfree import convert_paramfree

        return convert_paramfree(args.model, args.output, args.paramfree)
    from .converters.lmu import config_of
    from .model import load_model

    model = load_model(args.model)  # (read once: the LMUFormer test and the converter share it)
    if config_of(model) is not None:
        return _convert_lmuformer(args, model)
    if args.hop is None:
        print("edgekit convert: --stream needs --hop S", file=sys.stderr)
        return 2
    import onnx

    from .converters.stream import report, to_streaming

    sm = to_streaming(model, args.hop, split=args.split, window=args.window)
    data = _read_samples_file(args.data, sm.channels) if args.data else None
    rep = None
    if args.report:  # before saving: data that does not fit the model (shape, length) writes nothing
        from . import InferenceSession

        rep = report(sm, data, session=InferenceSession)
    onnx.save(sm.step_model, args.output)
    print(f"wrote {args.output}: step model, {sm.hop} new samples per call, window {sm.window}, "
          f"output delay {sm.delay} samples; states: {_states_text(sm.states)}")
    if rep is not None:
        print(rep)
    return 0


def _states_text(states: list) -> str:
    """A step model's state inputs and shapes, for the line that says what was written."""
    return ", ".join(f"{s.input} {list(s.shape)}" for s in states) or "none"


def _convert_lmuformer(args: argparse.Namespace, model: Any) -> int:
    """`convert --stream` of an LMUFormer: its step model (one frame per call), saved as it is."""
    import onnx

    from .converters.lmu import to_step

    refused = [why for why, on in (
        ("--hop: an LMUFormer streams one frame per step (hop 1)", args.hop not in (None, 1)),
        ("--split / --window: they choose a window CNN's streamed layers and window; an LMUFormer has neither",
         args.split or args.window),
        ("--report: it measures a zero-padded window CNN's streaming error against window inference; an "
         "LMUFormer's step model computes its whole-sequence outputs frame by frame, with no such error",
         args.report)) if on]
    if refused:
        print("edgekit convert: drop " + "; ".join(refused), file=sys.stderr)
        return 2
    sm = to_step(model)
    onnx.save(sm.step_model, args.output)
    print(f"wrote {args.output}: LMUFormer step model, 1 frame per call, output delay {sm.delay} frames; "
          f"states: {_states_text(sm.states)}")
    return 0


def _convert_binary(model_path: str, out_path: str, mst: str | None, mst_depth: int | None, report: bool) -> int:
    """`convert --binarize [--mst | --mst-force] [--mst-depth D] [--report]`: binarize, plan MST, save.

    ``mst`` "auto" (--mst) writes the MST plan (edge cost: predicted time) of the layers where the cost
    model predicts it faster than dense; "force" (--mst-force) writes the paper's plan (edge cost:
    differing bits, the fewest XNOR bit-ops) on every layer, exact but slower where differences spread
    over many 64-bit words. Either way every layer's choice is printed with its predicted times and savings. The report
    adds op counts, stored bits and each layer's measured time alone in edgekit, dense and MST."""
    import onnx

    from .benchmarks.timing import median_seconds
    from .converters import mst as mst_plans
    from .converters.binarize import DOMAIN, BinarizeWarning, binarize

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BinarizeWarning)
        converted = binarize(model_path)
    for w in caught:
        print(f"warning: {w.message}")
    count = sum(1 for n in converted.graph.node if n.domain == DOMAIN)
    print(f"{model_path}: {count} binary layer(s)")
    if not count:
        print(f"edgekit convert: {model_path} has no binary layer (sign activations and +-1 weights); nothing written",
              file=sys.stderr)
        return 1
    if mst or report:
        force = mst == "force"
        planned, rep = mst_plans.compress(converted, depth=mst_depth, apply=mst is not None, force=force,
                                          metric="bits" if force else "time")
        if report:
            timed = planned if force else mst_plans.compress(converted, depth=mst_depth, force=True)[0]
            mst_plans.time_layers(converted, timed, rep, median_seconds)
            print(rep.format())
        if mst:
            applied = sum(row.chosen == "mst" for row in rep.layers)
            bound = "none" if mst_depth is None else mst_depth
            paper = None if force else mst_plans.compress(converted, depth=mst_depth, force=True, metric="bits")[1]
            print(f"MST ({'--mst-force' if force else '--mst'}, depth bound {bound}): applied to {applied} of "
                  f"{count} binary layer(s); predicted time per call, dense -> MST")
            print(rep.decisions(paper))
            if not force and applied < count and mst_depth != 0:
                print("  --mst-force writes the fewest-XNOR-bits plan on every layer (exact, but predicted slower "
                      "where dense is kept)")
            print("  (stored weight bits count an enumerative code of the masks; the ONNX file keeps every mask as "
                  "full 64-bit words, so its size does not shrink)")
            converted = planned
    onnx.save(converted, out_path)
    print(f"wrote {out_path}")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from . import StreamingSession

    source = sys.stdin if args.source == "-" else open(args.source, encoding="utf-8-sig")  # (before compiling)
    name = "standard input" if args.source == "-" else args.source
    try:
        sess = StreamingSession(args.model, hop=args.hop, split=args.split, window=args.window,
                                allow_nan=args.allow_nan)
        samples = printed = 0
        batch = sess.state_dict()["batch"] or 1  # a fixed batch N > 1: the signal in each stream, the first printed
        for chunk in _chunks(source, sess.channels, sess.hop if args.source != "-" else 1, args.allow_nan):
            samples += chunk.shape[1]
            for outputs in sess.push(chunk if batch == 1 else np.repeat(chunk[None], batch, axis=0)):
                values = "  ".join(np.array2string((o[:1] if batch > 1 else o).reshape(-1), precision=4, separator=",")
                                   for o in outputs)
                print(f"hop {sess.hops} (sample {sess.hops * sess.hop}): {values}", flush=True)
                printed += 1
    finally:
        if source is not sys.stdin:
            source.close()
    if not samples:
        raise InputError(f"{name} has no samples (one CSV row per sample, {sess.channels} value(s) per row)")
    if not printed:  # (not an error: a live source may simply have stopped early)
        print(f"edgekit stream: {name} ended after {samples} samples; the first output needs "
              f"{(sess.warmup_hops + 1) * sess.hop}", file=sys.stderr)
    return 0


def _chunks(lines: TextIO, channels: int, rows_per_chunk: int, allow_nan: bool) -> Iterator[np.ndarray]:
    """(channels, n) float32 chunks from CSV text with one sample per row (a header row is skipped);
    a row holding NaN or Inf is refused by its line number unless ``allow_nan``."""
    rows: list[list[float]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            if number == 1:
                continue  # a header
            raise InputError(f"line {number} of the source is not {channels} comma-separated numbers: {line!r}")
        if len(values) != channels:
            raise InputError(f"line {number} of the source has {len(values)} value(s); the model takes {channels} "
                             f"channel(s), one value each per row")
        if not allow_nan and not all(math.isfinite(v) for v in values):
            raise InputError(f"line {number} of the source holds a NaN or Inf: {line!r} (--allow-nan passes them "
                             f"to the model)")
        rows.append(values)
        if len(rows) >= rows_per_chunk:
            yield np.asarray(rows, np.float32).T
            rows = []
    if rows:
        yield np.asarray(rows, np.float32).T


def _read_samples_file(path: str, channels: int) -> np.ndarray:
    """(channels, n) from a .npy array or a CSV file of one sample per row."""
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False).astype(np.float32)
        except (ValueError, TypeError) as exc:  # not a .npy file, or not numbers
            raise InputError(f"cannot read {path} as a numeric .npy array: {exc}") from exc
    with open(path, encoding="utf-8-sig") as f:
        chunks = list(_chunks(f, channels, 1 << 20, allow_nan=False))
    if not chunks:
        raise InputError(f"{path} has no samples")
    return np.concatenate(chunks, axis=1)


def add_convert_verbs(verbs: argparse._SubParsersAction) -> None:
    """Register `convert` and `stream` on the CLI's subparsers."""
    p = verbs.add_parser("convert", help="rewrite a model: --stream, --binarize or --paramfree",
                         description="Rewrite an ONNX model into a faster ONNX model.")
    p.add_argument("model", help="path of an .onnx file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the result")
    p.add_argument("--stream", action="store_true", help="StreamiNNC step model with explicit state I/O")
    p.add_argument("--hop", type=positive_int, help="new samples per step (--stream; an LMUFormer steps by 1 frame)")
    p.add_argument("--split", help="tensor where the head starts (--stream; default: found automatically)")
    p.add_argument("--window", type=positive_int,
                   help="window length L when the model's time axis is dynamic (--stream)")
    p.add_argument("--data", help="--stream --report: measure the error on this .npy or CSV signal")
    p.add_argument("--binarize", action="store_true", help="bit-packed XNOR/popcount binary layers")
    p.add_argument("--mst", action="store_true",
                   help="--binarize: MST-compress the binary layers where the cost model predicts it faster than dense")
    p.add_argument("--mst-force", action="store_true",
                   help="--binarize: MST-compress every binary layer with the fewest-XNOR-bits plan (the paper's)")
    p.add_argument("--mst-depth", type=non_negative_int,
                   help="--binarize --mst: depth bound of the spanning trees (0: every channel dense)")
    p.add_argument("--paramfree", choices=("max", "avg"), help="replace depthwise convs by max or avg pooling")
    p.add_argument("--report", action="store_true", help="print what the conversion changes and costs")
    p.set_defaults(func=cmd_convert)

    p = verbs.add_parser("stream", help="stream samples through a window CNN or an LMUFormer, outputs per hop",
                         description="Stream CSV samples (one row per sample, one column per channel) "
                                     "through a window CNN with StreamiNNC, or an LMUFormer frame by frame; "
                                     "prints the outputs of every hop (a model with a fixed batch N > 1 gets the "
                                     "signal in each of its N streams; the first one's outputs are printed).")
    p.add_argument("model", help="window model (.onnx), a step model from `edgekit convert --stream`, "
                                 "or an LMUFormer")
    p.add_argument("--hop", type=positive_int,
                   help="new samples per hop (required for a window CNN; an LMUFormer steps by 1)")
    p.add_argument("--source", required=True, metavar="FILE.csv|-", help="CSV file, or - for standard input")
    p.add_argument("--split", help="tensor where the head starts (default: found automatically)")
    p.add_argument("--window", type=positive_int, help="window length L when the model's time axis is dynamic")
    p.add_argument("--allow-nan", action="store_true", help="stream NaN / Inf samples instead of refusing them")
    p.set_defaults(func=cmd_stream)
