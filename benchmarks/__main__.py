"""`python -m benchmarks`: edgekit vs onnxruntime on edge-sized models, batch 1, one thread each.

Prints the machine, a latency table (medians, p90, ratio edgekit/onnxruntime, max output
difference), the per-call overhead on a one-Relu model, and cold start per model (fresh process,
empty and warm Numba cache). The full run takes a few minutes at most; --quick about half a minute.
"""
from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls; cold start of relu16 and the first model only")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per engine and model (default 300, quick 40)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-start measurements")
    parser.add_argument("--models", default=",".join(SUITE), help=f"comma-separated subset of {','.join(SUITE)}")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(SUITE)}")
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
