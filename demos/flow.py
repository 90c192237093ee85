"""AI Flow demo: a bundled 2D CNN split across device, edge and cloud tiers on loopback, predicted
vs measured latency at several device-edge bandwidths, then the edge tier killed mid-run.

The model (demos/models/frame_cnn.onnx, made by make_models.py) classifies 3x64x64 frames; its
stem shrinks a frame 6x, so sending the stem's features instead of the frames pays when the link
is slow and the device is too slow for the rest. The edge and cloud tiers are real `edgekit serve`
processes speaking the Open Inference Protocol on 127.0.0.1; the device is a FlowSession in this
process. Everything runs on this one machine, so two things are emulated: links (the sender
sleeps RTT + bytes / bandwidth, see runtimes/flow/client.py) and tier speeds (a tier with speed
s < 1 sleeps (1/s - 1) x its measured compute; the cloud, speed 1, is this machine); and nothing else:
the request handling of every hop (encoding, HTTP, decoding) is real, measured
(runtimes/flow/overhead.py: a fixed part plus a part per byte) and given to the partitioner as
its hop overhead. Each bandwidth is a round of its own: profile, hop overhead, plans and tier
processes are made afresh right before its requests, so that a drift of the machine's speed
between rounds does not skew the comparison.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import onnx

from edgekit.cli_args import positive_float, positive_int

from .plotting import add_plot_options, check_plot_options, figure

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "models", "frame_cnn.onnx")
NAME = "frame_cnn"
CONFIGS = ("device only", "cloud only", "chosen", "input on device")
STEM = {"conv0", "batchnormalization1", "relu2", "maxpool3"}
HEAD = {"globalaveragepool17", "flatten18", "logits"}
KILL_AFTER_S = 0.008  # into request 10: while its features are on the emulated link or the edge computes
TOLERANCE = 0.15  # the demo's target: measured within 15% of predicted
NOISE = 0.05  # measured differences below this are measurement noise
CLEAR = 0.20  # a split "clearly" beats a baseline when it is at least this much faster


@dataclasses.dataclass
class Scenario:
    device_speed: float
    edge_speed: float
    edge_rtt_s: float
    cloud_rtt_s: float
    cloud_bps: float
    hop_overhead_s: float = 0.0  # measured: measure_affine_hop_overhead
    hop_overhead_per_byte_s: float = 0.0

    def tiers(self):
        from edgekit.converters.partition import Tier

        return [Tier("device", self.device_speed), Tier("edge", self.edge_speed), Tier("cloud", 1.0)]

    def links(self, edge_bps: float):
        from edgekit.converters.partition import Link

        return [Link("device", "edge", edge_bps, self.edge_rtt_s),
                Link("edge", "cloud", self.cloud_bps, self.cloud_rtt_s)]

    def options(self, keep_input_on_device: bool = False):
        from edgekit.converters.partition import Options

        return Options(keep_input_on_device=keep_input_on_device, hop_overhead_s=self.hop_overhead_s,
                       hop_overhead_per_byte_s=self.hop_overhead_per_byte_s)


def frames(batch: int, seed: int = 0) -> np.ndarray:
    """[batch, 3, 64, 64] synthetic camera frames in [0, 1]: smooth colour gradients, a bright
    disc at a random place and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    out = np.empty((batch, 3, 64, 64), np.float32)
    for b in range(batch):
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.25)]
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(float)
        for c in range(3):
            a, bx, by = rng.uniform(0, 1, 3)
            noise = 0.03 * rng.standard_normal((64, 64))
            out[b, c] = np.clip(0.25 * (a + bx * xx + by * yy) + 0.5 * disc + noise, 0, 1)
    return out


def write_plans(model: onnx.ModelProto, profile: dict, sc: Scenario, bps: float, root: str,
                failover: bool = False) -> dict:
    """Plan dirs per config at device-edge bandwidth ``bps``: the two baselines, the partitioner's
    choice, and its choice when the raw input must stay on the device; with ``failover`` also one
    plan over all three tiers (the stem on the device, the convolutions on the edge, the head in the
    cloud) for the failure run."""
    from edgekit.converters.partition import Result, evaluate, partition, write_plan

    def write(part, assignment, key: str) -> str:
        cost = evaluate(part.problem, assignment, part.tiers, part.links, part.options)
        d = os.path.join(root, key)
        write_plan(dataclasses.replace(part, result=Result(list(assignment), cost)), d, name=f"{NAME}-{key}")
        return d

    part = partition(model, profile, sc.tiers(), sc.links(bps), sc.options())
    private = partition(model, profile, sc.tiers(), sc.links(bps), sc.options(keep_input_on_device=True))
    n = len(part.problem.nodes)
    plans = {config: write(p, assignment, config.replace(" ", "-"))
             for config, p, assignment in (("device only", part, [0] * n), ("cloud only", part, [2] * n),
                                           ("chosen", part, part.result.assignment),
                                           ("input on device", private, private.result.assignment))}
    if failover:
        plans["failover"] = write(part, [0 if v in STEM else 2 if v in HEAD else 1 for v in part.problem.nodes],
                                  "failover")
    return plans


def undisturbed_profile(model: onnx.ModelProto, batch: int, runs: int = 3, repeat: int = 30) -> dict:
    """The model's profile on this machine, every node's fastest of ``runs`` profiles of ``repeat``
    runs each, 10 ms apart: what the emulated tiers stretch is the fastest run too (see chain.py),
    and neither another process busy on the machine nor the slower of its cores at the moment
    (they differ here by up to 20 %) must inflate the prediction."""
    from edgekit.runtimes.profile import profile_model

    profiles = []
    for _ in range(runs):
        profiles.append(profile_model(model, {"batch": batch}, repeat=repeat, statistic="min").to_dict())
        time.sleep(0.01)
    best = profiles[0]
    for i, node in enumerate(best["nodes"]):
        node["time_s"] = min(p["nodes"][i]["time_s"] for p in profiles)
    for key in ("plan_s", "overhead_s"):
        best[key] = min(p[key] for p in profiles)
    return best


def start_tier(tier: str, plan_dirs: list[str], slowdown: float, next_url: str | None) -> tuple[subprocess.Popen, str]:
    """An `edgekit serve` process for ``tier`` on a free loopback port, emulating the plans' links
    on its forwards; returns it and its URL."""
    cmd = [sys.executable, "-m", "edgekit", "serve", *plan_dirs, "--tier", tier, "--port", "0",
           "--slowdown", repr(slowdown), "--emulate-links", "--deadline", "1.0", "--retries", "1"]
    if next_url:
        cmd += ["--next", f"cloud={next_url}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" on ")[1].split(";")[0].strip()
    raise RuntimeError(f"the {tier} tier did not start (exit code {proc.wait()})")


def same_as(out: np.ndarray, want: np.ndarray) -> bool:
    """Equal to the whole model's output up to float rounding: a cut between a Conv and the
    BatchNormalization/Relu that the whole model fuses into it rounds differently (about 1e-6)."""
    return bool(np.allclose(out, want, rtol=1e-5, atol=1e-5))


def measure(sessions: dict, feed: dict, want: np.ndarray, requests: int) -> dict[str, float]:
    """Median wall time per session of ``requests`` calls, the sessions taking turns (so a busy
    moment of the machine hits all of them alike), after two warm-up calls each; every answer
    must match the whole model's (see same_as)."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(requests + 2):
        for name, session in sessions.items():
            t0 = time.perf_counter()
            out = session.run(None, feed)[0]
            if r >= 2:
                times[name].append(time.perf_counter() - t0)
            if not same_as(out, want):
                raise AssertionError(f"{name}: a split run differs from the whole model by "
                                     f"{np.abs(out - want).max():.2e}")
    return {name: float(np.median(t)) for name, t in times.items()}


def plot(path: str, bandwidths: list[float], rows: dict) -> None:
    import matplotlib.ticker

    with figure(path, figsize=(7, 4.2)) as (fig, ax):
        mbps = [b / 1e6 for b in bandwidths]
        for config, color in zip(CONFIGS, ("tab:blue", "tab:orange", "tab:green", "tab:purple")):
            pred = [rows[(i, config)][0] * 1e3 for i in range(len(bandwidths))]
            meas = [rows[(i, config)][1] * 1e3 for i in range(len(bandwidths))]
            ax.plot(mbps, pred, "--", color=color, label=f"{config} predicted")
            ax.plot(mbps, meas, "o", color=color, label=f"{config} measured")
            if config == "chosen":
                for x, y, i in zip(mbps, meas, range(len(bandwidths))):
                    ax.annotate(rows[(i, config)][2], (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel="device-edge bandwidth (Mbit/s)", ylabel="latency per request (ms)",
               title=f"{NAME} across device / edge / cloud (loopback, emulated links and speeds)")
        ax.title.set_fontsize(10)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        fig.tight_layout()


def pin_to_one_core() -> set[int] | None:
    """Run this process and the tier processes it starts (they inherit it) on the core it is on,
    and return the cores it may use to restore them after; None where affinity is not available.
    The cores of a shared machine run at different speeds at times (up to 20 % here), and a 50x
    slower emulated device multiplies any difference between the core that profiled and the core
    that runs a request."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = os.sched_getaffinity(0)
    with open("/proc/self/stat", encoding="ascii") as f:  # field 39: the CPU this process last ran on
        current = int(f.read().rsplit(")", 1)[1].split()[36])
    os.sched_setaffinity(0, {current if current in cores else min(cores)})
    return cores


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the tier processes this demo started that still run, and forget them."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    procs.clear()


def load() -> str:
    """The 1, 5 and 15 minute load averages: how busy other processes keep the machine."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def bandwidths_mbps(text: str) -> list[float]:
    """An argparse type: comma-separated positive Mbit/s such as ``10,50,200``."""
    try:
        return [positive_float(b) for b in text.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated Mbit/s like 10,50,200: {exc}") from None


def check(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit demo flow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=positive_int, default=4, help="frames per request (default 4)")
    parser.add_argument("--bandwidths", type=bandwidths_mbps, default="10,50,200,1000",
                        help="device-edge Mbit/s to try (default 10,50,200,1000)")
    parser.add_argument("--requests", type=positive_int, default=15,
                        help="timed requests per configuration (default 15)")
    parser.add_argument("--device-speed", type=float, default=0.02, help="device speed vs this machine (default 0.02)")
    parser.add_argument("--edge-speed", type=float, default=0.25, help="edge speed vs this machine (default 0.25)")
    add_plot_options(parser, "flow_demo.png")
    args = parser.parse_args(argv)
    if not (0 < args.device_speed <= 1 and 0 < args.edge_speed <= 1):
        parser.error("speeds must be in (0, 1]: slower tiers are emulated by sleeping, the cloud is this machine")
    check_plot_options(parser, args)

    import edgekit
    from edgekit.runtimes.flow import FlowSession, describe, load_plan
    from edgekit.runtimes.flow.overhead import measure_affine_hop_overhead
    sc = Scenario(args.device_speed, args.edge_speed, edge_rtt_s=0.010, cloud_rtt_s=0.040, cloud_bps=200e6)
    bandwidths = [b * 1e6 for b in args.bandwidths]
    model = onnx.load(MODEL)
    feed = {"frame": frames(args.batch)}
    want = edgekit.InferenceSession(MODEL).run(None, feed)[0]
    print(f"model: {os.path.relpath(MODEL)}, a batch of {args.batch} frames {list(feed['frame'].shape)} per request")
    print(f"tiers: device {1 / sc.device_speed:.0f}x slower than this machine, edge {1 / sc.edge_speed:.0f}x "
          f"slower, cloud = this machine (slower tiers sleep in proportion to their measured compute)")
    mbps = ",".join(f"{b:g}" for b in args.bandwidths)
    print(f"links: device-edge {mbps} Mbit/s, RTT {sc.edge_rtt_s * 1e3:.0f} ms; edge-cloud "
          f"{sc.cloud_bps / 1e6:.0f} Mbit/s, RTT {sc.cloud_rtt_s * 1e3:.0f} ms (emulated in the sender)")

    print("every round profiles the model, measures the hop overhead, plans and starts the tiers afresh, so that "
          "the predictions are for this machine as it is then (its speed drifts over minutes when it is shared); "
          f"load average {load()} on {os.cpu_count()} cores\n")
    work = tempfile.mkdtemp(prefix="edgekit-flow-")
    rows, verdicts, procs = {}, [], []
    cores = pin_to_one_core()
    try:
        for i, bps in enumerate(bandwidths):
            last = i == len(bandwidths) - 1
            profile = undisturbed_profile(model, args.batch)
            sizes = profile["tensors"]
            sc.hop_overhead_s, sc.hop_overhead_per_byte_s = measure_affine_hop_overhead(
                max(t["bytes"] for t in sizes.values()))  # the fit spans every cut size
            plans = write_plans(model, profile, sc, bps, os.path.join(work, f"bw{i}"), failover=last)
            loaded = {key: load_plan(d) for key, d in plans.items()}
            served = {t: [d for key, d in plans.items() if loaded[key].part_of(t) is not None] for t in ("edge", "cloud")}
            endpoints = {}
            for tier, slowdown in (("cloud", 1.0), ("edge", 1 / sc.edge_speed)):  # a tier no plan uses is not started
                if served[tier]:
                    proc, endpoints[tier] = start_tier(tier, served[tier], slowdown, endpoints.get("cloud"))
                    procs.append(proc)
            if i == 0:
                print(f"input {sizes['frame']['bytes']} B a request, stem features {sizes['maxpool3']['bytes']} B "
                      f"({sizes['frame']['bytes'] / sizes['maxpool3']['bytes']:.0f}x smaller)\n")
                print(f"{'Mbit/s':>7s} {'plan':16s} {'runs on':24s} {'predicted':>10s} {'measured':>10s} {'error':>7s}")
            stem_s = sum(n["time_s"] for n in profile["nodes"] if n["name"] in STEM)
            print(f"{bps / 1e6:7.0f} profiled here: {profile['plan_s'] * 1e3:.2f} ms a request ({stem_s * 1e3:.2f} ms "
                  f"in the stem); hop overhead {sc.hop_overhead_s * 1e3:.2f} ms + "
                  f"{sc.hop_overhead_per_byte_s * 1e9:.2f} us/KB; tiers "
                  + ", ".join(f"{t} {u}" for t, u in endpoints.items()))
            sessions = {config: FlowSession(loaded[config], endpoints, slowdown=1 / sc.device_speed,
                                            emulate_links=True, deadline_s=2.0) for config in CONFIGS}
            measured = measure(sessions, feed, want, args.requests)
            for config in CONFIGS:
                plan = loaded[config]
                predicted = plan.raw["predicted"]["total_s"]
                where = " -> ".join(p.tier for p in plan.parts)
                if plan.parts[0].tier != "device":
                    where = f"(input) -> {where}"
                rows[(i, config)] = (predicted, measured[config], where)
                print(f"{bps / 1e6:7.0f} {config:16s} {where:24s} {predicted * 1e3:8.2f}ms "
                      f"{measured[config] * 1e3:8.2f}ms {(measured[config] - predicted) / predicted * 100:+6.1f}%")
            chosen = measured["chosen"]
            ratio = {c: measured[c] / chosen for c in CONFIGS[:2]}
            same = {c for c in CONFIGS[:2] if loaded[c].raw["assignment"] == loaded["chosen"].raw["assignment"]}
            verdicts.append((bps, ratio, same, rows[(i, "chosen")][2]))
            print(f"{'':7s} chosen vs baselines, measured: " + ", ".join(
                f"{ratio[c]:.2f}x faster than {c}" + (" (the same plan: the difference is noise)" if c in same else "")
                for c in CONFIGS[:2]))
            print(f"{'':7s} one chosen request: {describe(sessions['chosen'].last_trace)}")
            if not last:
                stop(procs)
        if not args.no_plot:
            try:
                plot(args.out, bandwidths, rows)
                print(f"wrote {args.out}")
            except ImportError:
                print('plot skipped: it needs matplotlib (pip install "edgekit[demo]")', file=sys.stderr)

        print(f"\nfailure: device (stem) -> edge (convolutions) -> cloud (head); the edge process is "
              f"killed (SIGKILL) {KILL_AFTER_S * 1e3:.0f} ms into request 10")
        session = FlowSession(loaded["failover"], endpoints, slowdown=1 / sc.device_speed,
                              emulate_links=True, deadline_s=1.0, retries=1)
        answered, wrong, where = 0, 0, {}
        for r in range(30):
            if r == 10:
                threading.Timer(KILL_AFTER_S, procs[-1].kill).start()  # the edge, started last
            out = session.run(None, feed)[0]
            answered += 1
            wrong += not same_as(out, want)
            route = " ".join(session.ran_on())
            where[route] = where.get(route, 0) + 1
            if r in (9, 10, 11):
                print(f"  request {r}: {describe(session.last_trace)}")
        for route, count in where.items():
            print(f"  {count:2d} requests ran their parts on: {route}")
        print(f"  answered {answered} of 30, wrong {wrong}, lost {30 - answered}")

        errors = [abs(m - p) / p for p, m, _ in rows.values()]
        within = sum(e <= TOLERANCE for e in errors)
        worse = [f"{bps / 1e6:g} Mbit/s vs {c}" for bps, ratio, same, _ in verdicts
                 for c, x in ratio.items() if x < 1 - NOISE and c not in same]
        clear = [f"{bps / 1e6:g} Mbit/s ({route})" for bps, ratio, _, route in verdicts
                 if " -> " in route.replace("(input) -> ", "") and min(ratio.values()) >= 1 / (1 - CLEAR)]
        print(f"\nchecks (the targets the demo holds itself to; load average now {load()} on {os.cpu_count()} cores):")
        print(f"  [{check(within == len(errors))}] measured within {TOLERANCE:.0%} of predicted: {within} of "
              f"{len(errors)} runs (median error {np.median(errors) * 100:.1f}%, worst {max(errors) * 100:.1f}%)")
        print(f"  [{check(not worse)}] the chosen plan is never slower than device only or cloud only beyond "
              f"{NOISE:.0%} noise (or is that plan)" + (f": slower at {', '.join(worse)}" if worse else ""))
        print(f"  [{check(bool(clear))}] a split across tiers beats both baselines by at least {CLEAR:.0%} at: "
              + (", ".join(clear) if clear else "no bandwidth tried"))
        print(f"  [{check(answered == 30 and wrong == 0)}] zero lost or wrong requests with the edge killed "
              f"mid-run: {30 - answered} lost, {wrong} wrong")
        return 0 if wrong == 0 and answered == 30 else 1
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
        if cores:
            os.sched_setaffinity(0, cores)
