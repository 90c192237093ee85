"""The `edgekit` command line: info, ops, run, bench, convert, stream, partition, serve, demo, backend-test. Exit codes: 0 ok, 1 failure, 2 usage.

Heavy modules (the runtime, Numba, onnxruntime) load inside the verbs, so `edgekit --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
import time

import numpy as np

from . import __version__
from .cli_args import dim, name_value, positive_int
from .cli_convert import add_convert_verbs
from .cli_partition import add_partition_verbs
from .cli_serve import add_serve_verbs
from .errors import EdgekitError, InputError

# Demo name -> (module with `main(argv) -> int`, one-line description). Demos register here.
DEMOS = {
    "quickstart": ("edgekit.demos.quickstart", "a bundled 1D CNN on edgekit and onnxruntime: outputs and speed"),
    "ppg": ("edgekit.demos.ppg", "heart rate from a real PPG recording, streamed hop by hop (StreamiNNC)"),
    "paramfree": ("edgekit.demos.paramfree", "depthwise vs parameter-free (max-pool) CNNs: accuracy, size, latency"),
    "bnn": ("edgekit.demos.bnn", "binary CNN on Fashion-MNIST: float vs XNOR/popcount, MST savings, latency"),
    "lmu": ("edgekit.demos.lmu", "LMUFormer (and its spiking form) classifying motion frame by frame: early decisions"),
    "flow": ("edgekit.demos.flow", "device/edge/cloud split over emulated links: predicted vs measured, tier failover"),
}
DEFAULT_DEMO = "ppg"


def _add_dims(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=dim, action="append", default=[], metavar="NAME=VALUE",
                   help="value of a dynamic input dimension (default 1); repeatable")


def cmd_info(args: argparse.Namespace) -> int:
    from .model import load_model
    from .stats import format_stats, model_stats

    proto = load_model(args.model)
    print(f"model: {args.model}")
    print(format_stats(model_stats(proto, dict(args.dim))))
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from .runtimes.ops import supported_ops

    ops = supported_ops()
    standard = [op for op in ops if "::" not in op]
    print(f"{len(standard)} standard ONNX ops (default domain):")
    print(textwrap.fill(", ".join(standard), width=100, initial_indent="  ", subsequent_indent="  "))
    print("custom ops: " + ", ".join(op for op in ops if "::" in op))
    return 0


def _load_inputs(pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    feeds = {}
    for name, path in pairs:
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            why = ("not a .npy file (write arrays with numpy.save)" if os.path.isfile(path) and not _is_npy(path)
                   else str(exc))
            raise InputError(f"cannot read input {name!r} from {path!r}: {why}") from None
        if not isinstance(feeds[name], np.ndarray):
            raise InputError(f"input {name!r}: {path!r} is an .npz archive; give one .npy array per input")
    return feeds


def _is_npy(path: str) -> bool:
    """Whether the file starts with the .npy magic or is a zip archive (an .npz)."""
    with open(path, "rb") as f:
        head = f.read(6)
    return head == b"\x93NUMPY" or head.startswith(b"PK\x03\x04")


def cmd_run(args: argparse.Namespace) -> int:
    from . import InferenceSession
    from .stats import random_inputs

    given = [name for name, _ in args.input]
    twice = sorted({n for n in given if given.count(n) > 1})
    if twice:
        print(f"edgekit run: --input given twice for {', '.join(twice)}", file=sys.stderr)
        return 2
    out_path = None
    if args.output:  # checked before running: np.savez adds .npz to a name without it
        out_path = args.output if args.output.endswith(".npz") else args.output + ".npz"
        if not os.path.isdir(os.path.dirname(out_path) or "."):
            raise InputError(f"cannot write {out_path}: no directory {os.path.dirname(out_path)!r}")
    session = InferenceSession(args.model)
    feeds = _load_inputs(args.input)
    unknown = [n for n in feeds if n not in {i.name for i in session.get_inputs()}]
    if unknown:
        raise InputError(f"--input {', '.join(unknown)}: not an input of the model; it takes "
                         f"{[i.name for i in session.get_inputs()]}")
    missing = [i.name for i in session.get_inputs() if i.name not in feeds]
    if missing and not args.random:
        raise InputError(f"no value for input(s) {missing}: pass --input NAME=FILE.npy or --random")
    if missing:
        generated = random_inputs(session.model, dict(args.dim), seed=args.seed)
        feeds.update({n: generated[n] for n in missing})
        print(f"random inputs (seed {args.seed}): {', '.join(f'{n} {list(generated[n].shape)}' for n in missing)}")
    names = [o.name for o in session.get_outputs()]
    t0 = time.perf_counter()
    outputs = session.run(None, feeds)
    elapsed = time.perf_counter() - t0
    for name, out in zip(names, outputs):
        summary = (f" min {out.min():.6g} max {out.max():.6g} mean {out.mean():.6g}"
                   if out.size and out.dtype.kind in "fiu" else "")
        print(f"{name}: {out.dtype} {list(out.shape)}{summary}")
    print(f"first run {elapsed * 1e3:.2f} ms (includes planning for these input shapes)")
    if out_path:
        np.savez(out_path, **dict(zip(names, outputs)))
        print(f"wrote {out_path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks.timing import compare, edgekit_session, interleaved_times, ort_session_or_refusal
    from .model import load_model
    from .stats import random_inputs

    proto = load_model(args.model)
    feeds = random_inputs(proto, dict(args.dim))
    print(f"inputs: {', '.join(f'{n} {list(a.shape)}' for n, a in feeds.items())}; {args.repeat} timed calls "
          f"per engine; onnxruntime on {args.threads} intra-op thread(s), edgekit on one (its binary layers on "
          f"{args.threads})")
    ort, refusal = ort_session_or_refusal(proto, args.threads)
    print(f"{'engine':12s} {'median us':>11s} {'p90 us':>11s}")
    if refusal is not None:  # e.g. a model `edgekit convert` wrote with edgekit's own ops
        sess = edgekit_session(proto, args.threads)
        t = interleaved_times({"edgekit": lambda: sess.run(None, feeds)}, args.repeat, warmup=5)["edgekit"] * 1e6
        print(f"{'edgekit':12s} {np.median(t):11.1f} {np.percentile(t, 90):11.1f}")
        print(f"onnxruntime cannot run this model, so edgekit was timed alone: {refusal}")
        return 0
    c = compare(args.model, proto, feeds, repeat=args.repeat, threads=args.threads, ort=ort)
    print(f"{'edgekit':12s} {c.edgekit_median_us:11.1f} {c.p90_us('edgekit'):11.1f}")
    print(f"{'onnxruntime':12s} {c.ort_median_us:11.1f} {c.p90_us('ort'):11.1f}")
    print(f"ratio edgekit/onnxruntime {c.ratio:.2f}; max |output difference| {c.max_abs_diff:.2e}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return importlib.import_module(DEMOS[args.name][0]).main(args.demo_args)


def cmd_backend_test(args: argparse.Namespace) -> int:
    from .backend import report

    return 1 if report(args.pattern, args.verbose) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekit", description="Run ONNX models fast on small CPUs.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("info", help="inputs, outputs, op counts, parameters, MACs, unsupported ops",
                         description="Describe a model: I/O, op counts, parameters, MACs, unsupported ops.")
    p.add_argument("model", help="path of an .onnx file")
    _add_dims(p)
    p.set_defaults(func=cmd_info)

    p = verbs.add_parser("ops", help="the operators edgekit runs", description="List the operators edgekit runs.")
    p.set_defaults(func=cmd_ops)

    p = verbs.add_parser("run", help="run a model on .npy inputs", description="Run a model on edgekit.")
    p.add_argument("model", help="path of an .onnx file")
    p.add_argument("--input", type=name_value, action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array; repeatable")
    p.add_argument("--random", action="store_true", help="fill inputs not given with seeded random data")
    p.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    _add_dims(p)
    p.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs to an .npz archive")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("bench", help="edgekit vs onnxruntime latency on random inputs",
                         description="Median and p90 latency of edgekit and onnxruntime on random inputs.")
    p.add_argument("model", help="path of an .onnx file")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="onnxruntime's intra-op threads, and edgekit's for binary layers; edgekit runs other "
                        "kernels on one thread (default 1)")
    p.add_argument("--repeat", type=positive_int, default=200, help="timed calls per engine (default 200)")
    _add_dims(p)
    p.set_defaults(func=cmd_bench)

    add_convert_verbs(verbs)
    add_partition_verbs(verbs)
    add_serve_verbs(verbs)

    p = verbs.add_parser("demo", help="run a bundled demo", description="Run a bundled demo.",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="demos:\n" + "\n".join(f"  {n:12s} {d}" for n, (_, d) in DEMOS.items()))
    p.add_argument("name", nargs="?", default=DEFAULT_DEMO, choices=sorted(DEMOS),
                   help=f"which demo (default {DEFAULT_DEMO})")
    p.add_argument("demo_args", nargs=argparse.REMAINDER, help="options passed to the demo")
    p.set_defaults(func=cmd_demo)

    p = verbs.add_parser("backend-test", help="run onnx's backend node tests on edgekit",
                         description="Run onnx's backend node tests for the ops edgekit registers.")
    p.add_argument("-k", dest="pattern", help="only run tests whose name matches this regex")
    p.add_argument("-v", "--verbose", action="store_true", help="print every test's outcome")
    p.set_defaults(func=cmd_backend_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse's usage errors give 2)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"] and argv[1:2] and argv[1].startswith("-") and argv[1] not in ("-h", "--help"):
        argv.insert(1, DEFAULT_DEMO)  # `edgekit demo --no-plot`: options of the default demo
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # (a reader that went away shows here, not as a traceback at exit)
        return code
    except EdgekitError as exc:
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout's reader stopped reading (``| head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush finds no pipe
        return 1
    except OSError as exc:  # a file to read that is not there, a directory to write into that is not
        if exc.filename is None:  # not about a file the user named: keep the traceback
            raise
        print(f"edgekit: error: {exc}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as exc:
        print(f"edgekit: error: a file read as text is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
