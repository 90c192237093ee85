"""FlowSession: run a partitioned model from the device, like InferenceSession, with fallback."""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from edgekit.arrays import as_array
from edgekit.errors import InputError

from .chain import Chain
from .plan import FlowPlan, Link, load_plan


class FlowSession:
    """Run the plan in ``plan_dir`` from ``tier`` (the device): its own part here, the cut tensors to
    the next tier's V2 endpoint (``endpoints``: tier name -> base URL), and everything that tier
    cannot deliver within ``deadline_s`` (after ``retries``) locally, so every call returns.

    ``emulate_links`` True sleeps the plan's link times in the transport (or give a dict
    (from, to) -> Link); ``slowdown`` stretches local compute to emulate a slower device.
    ``last_trace`` lists where each part ran and how long compute and transfers took.
    """

    def __init__(self, plan_dir: str | FlowPlan, endpoints: dict[str, str] | None = None, *,
                 deadline_s: float = 2.0, retries: int = 1, slowdown: float = 1.0,
                 emulate_links: bool | dict[tuple[str, str], Link] = False, token: str | None = None,
                 cooldown_s: float = 1.0, tier: str = "device") -> None:
        self.plan = plan_dir if isinstance(plan_dir, FlowPlan) else load_plan(plan_dir)
        self._input_set = set(self.plan.inputs)
        self.chain = Chain(self.plan, tier, endpoints=endpoints, deadline_s=deadline_s, retries=retries,
                           slowdown=slowdown, links=emulate_links, token=token, cooldown_s=cooldown_s)
        if self.plan.parts[0].tier == tier:
            self.chain.session(0)
        self.last_trace: list[dict] = []
        self.last_total_s = 0.0

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> list[np.ndarray]:
        """The model's outputs (all when ``output_names`` is None) for ``input_feed``."""
        if not isinstance(input_feed, dict) or input_feed.keys() != self._input_set:
            got = list(input_feed) if isinstance(input_feed, dict) else type(input_feed).__name__
            raise InputError(f"input_feed must map exactly the model inputs {self.plan.inputs}, got {got}")
        names = list(output_names) if output_names is not None else self.plan.outputs
        unknown = [n for n in names if n not in self.plan.outputs]
        if unknown:
            raise InputError(f"{unknown} are not outputs of the model; outputs are {self.plan.outputs}")
        t0 = time.perf_counter()
        feed = {n: as_array(input_feed[n], f"input {n!r}") for n in self.plan.parts[0].inputs}
        results, self.last_trace = self.chain.run(0, feed)
        self.last_total_s = time.perf_counter() - t0
        # a model output that is a raw input is in no part: it never leaves the caller
        return [results[n] if n in results else as_array(input_feed[n], f"input {n!r}") for n in names]

    def ran_on(self) -> list[str]:
        """Where each part of the last run ran, in part order (from ``last_trace``)."""
        return [e["ran_on"] for e in sorted((e for e in self.last_trace if e["event"] == "compute"),
                                            key=lambda e: e["part"])]


def describe(trace: list[dict]) -> str:
    """One line per trace: 'part 0 device@device 1.2 ms | device->edge 10.3 ms | ...'."""
    out = []
    for e in trace:
        if e["event"] == "compute":
            ms = "?" if e["compute_s"] is None else f"{e['compute_s'] * 1e3:.1f} ms"
            out.append(f"{e['tier']}@{e['ran_on']} {ms}")
        elif e["event"] == "transfer":
            out.append(f"{e['from']}->{e['to']} {e['transfer_s'] * 1e3:.1f} ms ({e['bytes']} B)")
        else:
            out.append(f"FALLBACK {e['tier']}->{e['ran_on']}")
    return " | ".join(out)
