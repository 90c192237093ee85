"""edgekit.runtimes.flow: serve and run partitioned models across device, edge and cloud tiers over
the Open Inference Protocol (KServe V2 REST), with fallback, traces and link emulation."""
from .chain import Chain
from .overhead import measure_affine_hop_overhead, measure_hop_overhead
from .plan import FlowPlan, Link, Part, load_plan
from .server import TierServer
from .session import FlowSession, describe

__all__ = ["Chain", "FlowPlan", "FlowSession", "Link", "Part", "TierServer", "describe", "load_plan",
           "measure_affine_hop_overhead", "measure_hop_overhead"]
