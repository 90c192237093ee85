"""The `edgekit partition` verb: profile a model (or load its profile), split it across device, edge
and cloud at the cheapest cuts, write the plan directory and print the plan."""
from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING

from .cli_args import dim, positive_float, positive_int
from .errors import InputError

if TYPE_CHECKING:
    from .converters.partition import Link, Tier

_RATE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_SIZE = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_NUMBER = r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?)"


def parse_tier(text: str) -> Tier:
    """``NAME:SPEED`` (speed relative to the profiling machine) or ``NAME:PROFILE.json`` (its own profile)."""
    from .converters.partition import Tier

    name, sep, value = text.partition(":")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME:SPEED or NAME:PROFILE.json, got {text!r}")
    if value.endswith(".json"):
        try:
            return Tier(name, profile=_load_profile(value))
        except InputError as exc:
            raise argparse.ArgumentTypeError(f"tier {name!r}: {exc}") from None
    try:
        speed = positive_float(value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"tier {name!r} speed: {exc}") from None
    return Tier(name, speed)


def _load_profile(path: str) -> dict:
    from .runtimes.profile import Profile

    return Profile.load(path).to_dict()


def parse_link(text: str) -> Link:
    """``A-B:BANDWIDTH,RTT`` such as ``device-edge:20Mbps,10ms`` (bandwidth in bps/kbps/Mbps/Gbps)."""
    from .converters.partition import Link

    m = re.fullmatch(rf"([^-:]+)-([^-:]+):{_NUMBER}\s*([kmg]?)bps,(.+)", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"expected A-B:BANDWIDTH,RTT like device-edge:20Mbps,10ms; got {text!r}")
    a, b, bw, unit, rtt = m.groups()
    bandwidth = float(bw) * _RATE[unit.lower()]
    if bandwidth <= 0:
        raise argparse.ArgumentTypeError(f"link {a}-{b}: bandwidth must be positive")
    try:
        rtt_s = parse_duration(rtt)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"link {a}-{b}: RTT: {exc}") from None
    return Link(a, b, bandwidth, rtt_s)


def parse_duration(text: str) -> float:
    """Seconds from ``0.8ms``, ``500us``, ``0.002s``."""
    m = re.fullmatch(rf"{_NUMBER}\s*(s|ms|us)", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a time like 0.8ms, 500us or 0.002s; got {text!r}")
    return float(m.group(1)) * _TIME[m.group(2).lower()]


def parse_hop_overhead(text: str) -> tuple[float, float] | str:
    """``measure`` (measured here by runtimes.flow.overhead.measure_affine_hop_overhead) or (fixed
    seconds, seconds per byte) from ``0.8ms`` or ``0.8ms,0.7us/KB`` (per ``B``, ``KB``, ``MB``, ``KiB``, ``MiB``)."""
    if text.strip().lower() == "measure":
        return "measure"
    fixed, sep, rate = text.partition(",")
    if not sep:
        return parse_duration(fixed), 0.0
    m = re.fullmatch(rf"{_NUMBER}\s*(s|ms|us|ns)\s*/\s*([km]i?b|b)", rate.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a time per size like 0.7us/KB after the comma; got {rate!r}")
    return parse_duration(fixed), float(m.group(1)) * _TIME[m.group(2).lower()] / _SIZE[m.group(3).lower()]


def parse_size(text: str) -> int:
    """Bytes from ``64MB``, ``512KiB``, ``1000000``."""
    m = re.fullmatch(rf"{_NUMBER}\s*([kmg]i?b|b)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 64MB or 512KiB, got {text!r}")
    return int(float(m.group(1)) * _SIZE[(m.group(2) or "").lower()])


def cmd_partition(args: argparse.Namespace) -> int:
    from .converters.partition import Options, Power, check_cuttable, check_network, partition, summary, write_plan
    from .ir import read_graph
    from .model import load_model
    from .stats import checked_dims

    if not args.tier:
        raise InputError("give the tiers, device first: --tier device:1 --tier edge:4 --tier cloud:16")
    check_network(args.tier, args.link)  # before profiling: a typo must not cost a profile first
    proto = load_model(args.model)
    inputs = read_graph(proto).inputs
    checked_dims(inputs, dict(args.dim))
    dims = {d for vi in inputs for d in (vi.shape or ()) if isinstance(d, str)}
    check_cuttable(proto)  # a graph the exact solver refuses is refused before the profiling too
    os.makedirs(args.output, exist_ok=True)
    if args.profile:
        profile = _load_profile(args.profile)
    else:
        from .runtimes.profile import profile_model

        prof = profile_model(proto, dict(args.dim), repeat=args.repeat)
        prof.save(os.path.join(args.output, "profile.json"))
        profile = prof.to_dict()
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in prof.inputs.items())
        unset = sorted(dims - dict(args.dim).keys())
        print(f"profiled {len(prof.nodes)} nodes at {shapes} ({args.repeat} runs): node medians sum to "
              f"{sum(n.time_s for n in prof.nodes) * 1e3:.3f} ms here; "
              f"wrote {os.path.join(args.output, 'profile.json')}"
              + (f"\n(dynamic dims {unset} were 1: --dim NAME=VALUE profiles the sizes you will run)" if unset else ""))
    overhead = args.hop_overhead
    if overhead == "measure":
        from .runtimes.flow.overhead import measure_affine_hop_overhead

        largest = max(t["bytes"] for t in profile["tensors"].values())  # the fit spans the cut sizes
        overhead = measure_affine_hop_overhead(min(max(1_000_000, largest), 8_000_000))
        print(f"measured the hop overhead (one V2 request on loopback, beyond compute): {overhead[0] * 1e3:.3f} ms "
              f"+ {overhead[1] * 1e9:.3f} us/KB")
    opts = Options(args.objective, args.compress, args.keep_input_on_device, args.device_memory,
                   Power(args.active_power, args.idle_power, args.radio_nj_per_byte * 1e-9), *overhead)
    part = partition(proto, profile, args.tier, args.link, opts)
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    plan = write_plan(part, args.output, name)
    print(summary(plan))
    print(f"wrote {args.output}: plan.json, " + ", ".join(p["file"] for p in plan["parts"]))
    return 0


def add_partition_verbs(verbs: argparse._SubParsersAction) -> None:
    """Register `partition` on the CLI's subparsers."""
    p = verbs.add_parser("partition", help="split a model across device, edge and cloud",
                         description="Profile a model, choose the device -> edge -> cloud split with the least "
                                     "latency (or device energy), write one ONNX part per tier and plan.json.")
    p.add_argument("model", help="path of an .onnx file")
    p.add_argument("--tier", type=parse_tier, action="append", default=[], metavar="NAME:SPEED|NAME:PROFILE.json",
                   help="a tier, in data-flow order (device first); repeatable")
    p.add_argument("--link", type=parse_link, action="append", default=[], metavar="A-B:BW,RTT",
                   help="a link such as device-edge:20Mbps,10ms; repeatable")
    p.add_argument("--hop-overhead", type=parse_hop_overhead, default=(0.0, 0.0), metavar="TIME[,TIME/SIZE]|measure",
                   help="time each transfer adds beyond RTT and bandwidth (request encoding, HTTP, decoding): "
                        "fixed, plus optionally per byte on the wire, e.g. 0.8ms or 0.8ms,0.7us/KB; or 'measure' "
                        "to measure both here over loopback (default 0)")
    p.add_argument("--objective", choices=("latency", "energy"), default="latency",
                   help="minimise end-to-end latency (default) or device energy")
    p.add_argument("--compress", choices=("none", "fp16", "int8", "zstd"), default="none",
                   help="codec of the tensors sent between tiers (default none)")
    p.add_argument("--keep-input-on-device", action="store_true", help="the raw input never leaves the device")
    p.add_argument("--device-memory", type=parse_size, metavar="SIZE",
                   help="device memory limit (weights + largest node working set), e.g. 64MB")
    p.add_argument("--profile", metavar="PROFILE.json", help="use this profile instead of profiling now")
    p.add_argument("--dim", type=dim, action="append", default=[], metavar="NAME=VALUE",
                   help="value of a dynamic input dimension when profiling (default 1); repeatable")
    p.add_argument("--repeat", type=positive_int, default=20, help="profiling runs per node (default 20)")
    p.add_argument("--active-power", type=float, default=2.0, metavar="W", help="device active power (energy)")
    p.add_argument("--idle-power", type=float, default=0.3, metavar="W", help="device idle power (energy)")
    p.add_argument("--radio-nj-per-byte", type=float, default=400.0, metavar="NJ",
                   help="device radio energy per byte sent or received (energy, default 400)")
    p.add_argument("--name", help="served model name prefix (default: the model file's name)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="plan directory to write")
    p.set_defaults(func=cmd_partition)
