"""Read a partition plan directory (plan.json + one ONNX part per tier; format in docs/flow.md)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import ModelError

FORMAT = "edgekit.flow/1"
COMPRESSIONS = ("none", "fp16", "int8", "zstd", "lz4")


@dataclass(frozen=True)
class Part:
    """One tier's sub-model: its ONNX file and the tensors it reads and hands on."""

    tier: str
    path: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """An emulated network link: one round trip plus bytes at a bandwidth (bits per second)."""

    rtt_s: float = 0.0
    bandwidth_bps: float = float("inf")

    def time(self, nbytes: int) -> float:
        """Seconds to send ``nbytes``: one RTT plus the bytes at the bandwidth."""
        return self.rtt_s + 8.0 * nbytes / self.bandwidth_bps


@dataclass
class FlowPlan:
    """A partitioned model: parts in data-flow order; ``into[k]`` is the compression used to send
    part k's inputs (None when the device runs part k and nothing is sent)."""

    dir: str
    model: str
    inputs: list[str]
    outputs: list[str]
    tiers: dict[str, float]
    links: dict[tuple[str, str], Link]
    parts: list[Part]
    into: list[str | None]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def served_name(self, tier: str) -> str:
        """The V2 model name under which ``tier`` serves its part."""
        return f"{self.model}-{tier}"

    def input_shapes(self, k: int) -> dict[str, tuple[np.dtype, list]] | None:
        """dtype and shape of part k's inputs as the plan's transfer records them (None if not sent)."""
        t = k - len(self.parts) + len(self.raw.get("transfers", []))
        if t < 0:
            return None
        return {x["name"]: (np.dtype(x["dtype"]), list(x["shape"])) for x in self.raw["transfers"][t]["tensors"]}

    def part_of(self, tier: str) -> int | None:
        """Index of the part ``tier`` runs, None when it runs none."""
        return next((k for k, p in enumerate(self.parts) if p.tier == tier), None)

    def link(self, src: str, dst: str) -> Link:
        """The link between two tiers (either direction); when none is given for tiers that are not
        neighbours, the links in between one after the other (their times add, as in the cost model)."""
        direct = either_way(self.links, src, dst)
        if direct is not None:
            return direct
        order = list(self.tiers)
        if src in order and dst in order and order.index(src) < order.index(dst):
            path = order[order.index(src):order.index(dst) + 1]
            hops = [either_way(self.links, a, b) for a, b in zip(path, path[1:])]
            if all(hops):
                return _Chain(hops=tuple(hops))
        return Link()


def either_way(links: dict[tuple[str, str], Link], a: str, b: str) -> Link | None:
    """The link given between tiers ``a`` and ``b`` in either direction, None when there is none."""
    return links.get((a, b)) or links.get((b, a))


@dataclass(frozen=True)
class _Chain(Link):
    hops: tuple[Link, ...] = ()

    def time(self, nbytes: int) -> float:
        return sum(h.time(nbytes) for h in self.hops)


def _need(doc: dict, key: str, kind: type, where: str) -> Any:
    if not isinstance(doc.get(key), kind):
        raise ModelError(f"{where}: {key!r} is missing or not a {kind.__name__}")
    return doc[key]


def _check_tensor(x: dict, where: str) -> None:
    """A transfer's tensor record: a name, a dtype numpy knows and a shape of non-negative ints."""
    where = f"{where}: tensor {x.get('name')!r}"
    _need(x, "name", str, where)
    try:
        np.dtype(_need(x, "dtype", str, where))
    except TypeError:
        raise ModelError(f"{where}: dtype {x.get('dtype')!r} is not a numpy dtype") from None
    shape = x.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ModelError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")


def load_plan(plan_dir: str) -> FlowPlan:
    """Parse and check DIR/plan.json; raises ModelError naming what is wrong."""
    path = os.path.join(plan_dir, "plan.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ModelError(f"cannot read the plan {path}: {exc.strerror}; make one with `edgekit partition`") from None
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"{path}: 'format' must be {FORMAT!r}")
    try:
        return _parse(plan_dir, path, doc)
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a field of the wrong kind
        raise ModelError(f"{path} is malformed ({type(exc).__name__}: {exc}); "
                         "make the plan again with `edgekit partition`") from None


def _parse(plan_dir: str, path: str, doc: dict) -> FlowPlan:
    """The checks of load_plan on a parsed plan.json."""
    tier_list = _need(doc, "tiers", list, path)
    tiers = {_need(t, "name", str, path): float(t.get("speed", 1.0)) for t in tier_list}
    if len(tiers) != len(tier_list):
        raise ModelError(f"{path}: tier names must be unique, got {[t['name'] for t in tier_list]}")
    links = {(lk["from"], lk["to"]): Link(float(lk.get("rtt_s", 0.0)), float(lk.get("bandwidth_bps", float("inf"))))
             for lk in doc.get("links", [])}
    parts = []
    for i, p in enumerate(_need(doc, "parts", list, path)):
        where = f"{path}: parts[{i}]"
        file = os.path.join(plan_dir, _need(p, "file", str, where))
        if not os.path.isfile(file):
            raise ModelError(f"{where}: part file {file} does not exist")
        parts.append(Part(_need(p, "tier", str, where), file, tuple(_need(p, "inputs", list, where)),
                          tuple(_need(p, "outputs", list, where))))
    if not parts:
        raise ModelError(f"{path}: the plan has no parts")
    transfers = _need(doc, "transfers", list, path)
    offset = len(transfers) - (len(parts) - 1)  # 1 when the raw input leaves the device unchanged
    if offset not in (0, 1):
        raise ModelError(f"{path}: {len(parts)} parts need {len(parts) - 1} or {len(parts)} transfers, "
                         f"found {len(transfers)}")
    into: list[str | None] = []
    for k, part in enumerate(parts):
        t = k - 1 + offset
        if t < 0:
            into.append(None)
            continue
        for x in transfers[t].get("tensors", []):
            _check_tensor(x, f"{path}: transfers[{t}]")
        names = tuple(x["name"] for x in transfers[t].get("tensors", []))
        if set(names) != set(part.inputs) or transfers[t].get("to") != part.tier:
            raise ModelError(f"{path}: transfers[{t}] must carry part {k}'s inputs {list(part.inputs)} "
                             f"to {part.tier!r}, it carries {list(names)} to {transfers[t].get('to')!r}")
        comp = transfers[t].get("compression", "none")
        if comp not in COMPRESSIONS:
            raise ModelError(f"{path}: transfers[{t}]: compression {comp!r} is not one of {COMPRESSIONS}")
        into.append(comp)
    if offset == 0 and parts[0].tier != "device" and parts[0].tier in tiers and "device" in tiers:
        raise ModelError(f"{path}: the first part runs on {parts[0].tier!r}, so transfers[0] must send it "
                         f"the raw input from 'device'")
    for k in range(len(parts) - 1):
        missing = set(parts[k + 1].inputs) - set(parts[k].outputs)
        if missing:
            raise ModelError(f"{path}: part {k} ({parts[k].tier}) does not output {sorted(missing)}, "
                             f"which part {k + 1} needs")
    return FlowPlan(plan_dir, _need(doc, "model", str, path), list(_need(doc, "inputs", list, path)),
                    list(_need(doc, "outputs", list, path)), tiers, links, parts, into, doc)
