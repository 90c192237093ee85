"""`python -m benchmarks [SUITE ...]`: edgekit vs onnxruntime, batch 1, one thread each.

Suites (default: core stream binary paramfree; each is also its own `python -m benchmarks.<name>`):
- core: edge-sized models: latency table (medians, p90, ratio edgekit/onnxruntime, max output
  difference), the per-call overhead on a one-Relu model, and cold start per model (fresh process,
  empty and warm Numba cache);
- stream: StreamiNNC per-hop latency, StreamingSession vs recomputing the window (benchmarks.stream);
- binary: BinaryConv vs float Conv (benchmarks.binary);
- paramfree: parameter-free layers vs depthwise convolutions (benchmarks.paramfree);
- lmu: LMUFormer per-step latency (benchmarks.lmu; not in the default run);
- spectral: STFT, log-mel and DFT front ends (benchmarks.spectral; not in the default run).
The default run takes several minutes; --quick a minute or two.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from edgekit.errors import UnsupportedOpError
from edgekit.stats import random_inputs

from .coldstart import cold_start
from .models import SUITE, relu16
from .timing import compare, machine


def _row(name: str, model, repeat: int) -> tuple[str, bool]:
    """One table line, and whether edgekit could run the model."""
    try:
        c = compare(name, model, random_inputs(model, seed=0), repeat=repeat)
    except UnsupportedOpError as exc:
        ops = sorted({op for _, op, _, _, _ in exc.unsupported})
        return f"{name:10s} not runnable on edgekit yet: unsupported {', '.join(ops)}", False
    return (f"{name:10s} {c.edgekit_median_us:12.1f} {c.ort_median_us:12.1f} {c.ratio:7.2f} "
            f"{c.p90_us('edgekit'):12.1f} {c.p90_us('ort'):12.1f} {c.max_abs_diff:10.1e}"), True


# suite -> (module under benchmarks, its arguments for a full run, for --quick); "core" is this module.
SUITES: dict[str, tuple[str, list[str], list[str]]] = {
    "core": ("", [], []),
    "stream": ("stream", [], ["--quick"]),
    "binary": ("binary", [], ["--repeat", "30"]),
    "paramfree": ("paramfree", ["--repeat", "50"], ["--repeat", "20"]),
    "lmu": ("lmu", [], ["--quick"]),
    "spectral": ("spectral", [], ["--quick"]),
}
DEFAULT_SUITES = ("core", "stream", "binary", "paramfree")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run, of {', '.join(SUITES)} (default: {' '.join(DEFAULT_SUITES)})")
    parser.add_argument("--quick", action="store_true", help="fewer calls; cold start of relu16 and the first model only")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per engine and row in every suite (default: each suite's own; core 300, quick 40)")
    parser.add_argument("--no-cold", action="store_true", help="core: skip the cold-start measurements")
    parser.add_argument("--models", default=",".join(SUITE), help=f"core: comma-separated subset of {','.join(SUITE)}")
    args = parser.parse_args(argv)
    suites = args.suites or list(DEFAULT_SUITES)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(SUITE)}")
    status = 0
    for i, suite in enumerate(suites):
        print(f"{chr(10) if i else ''}# {suite}", flush=True)
        module, full, quick = SUITES[suite]
        if not module:
            status |= _core(args, names)
            continue
        extra = [a for a in (quick if args.quick else full) if not (args.repeat and a == "--quick")]
        extra += ["--repeat", str(args.repeat)] if args.repeat else []  # the last --repeat wins
        status |= importlib.import_module(f"{__package__}.{module}").main(extra)
    return status


def _core(args: argparse.Namespace, names: list[str]) -> int:
    """The core suite: model table, per-call overhead, cold start."""
    repeat = args.repeat or (40 if args.quick else 300)
    models = {n: SUITE[n]() for n in names}

    print(f"machine: {machine()}")
    print("batch 1, one thread each (onnxruntime: intra_op_num_threads=1, default graph optimisations); "
          f"{repeat} timed calls per engine, interleaved\n")
    print(f"{'model':10s} {'edgekit us':>12s} {'ort us':>12s} {'ratio':>7s} {'edgekit p90':>12s} {'ort p90':>12s} "
          f"{'max|diff|':>10s}")
    runnable = []
    for name, model in models.items():
        line, ok = _row(name, model, repeat)
        print(line, flush=True)
        runnable += [name] if ok else []

    overhead = compare("relu16", relu16(), random_inputs(relu16()), repeat=max(repeat, 1000))
    print(f"\nper-call overhead (one Relu on 16 floats): edgekit {overhead.edgekit_median_us:.1f} us, "
          f"onnxruntime {overhead.ort_median_us:.1f} us (ratio {overhead.ratio:.2f})")

    if not args.no_cold:
        print("\ncold start, fresh process: import + session + first run (s)")
        print(f"{'model':10s} {'edgekit empty cache':>20s} {'edgekit warm cache':>19s} {'onnxruntime':>12s}")
        cold = {"relu16": relu16(), **{n: models[n] for n in runnable[:1 if args.quick else None]}}
        for name, model in cold.items():
            try:
                t = cold_start(model, random_inputs(model))
            except RuntimeError as exc:
                print(f"{name:10s} failed: {exc}")
                continue
            print(f"{name:10s} {t['edgekit_empty_cache']:20.2f} {t['edgekit_warm_cache']:19.2f} "
                  f"{t['onnxruntime']:12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
