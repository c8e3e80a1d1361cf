"""Which simulation worker ran a ClientApp call: the Ray node, when Flower's Ray backend runs it.

On a Ray cluster (``docs/scaling.md``) the virtual nodes' ClientApp calls run in Ray
actors spread over the cluster's machines; the train reply names the Ray node it ran on
(``wire.WORKER`` in its ``info`` record) and the server counts replies per worker in every
round (``workers`` in metrics.json), which shows where the work went. Outside Ray (a
deployed SuperNode, the in-process test harness) nothing is reported.
"""

from __future__ import annotations

import sys


def ray_worker() -> str | None:
    """``ray:<node id>`` of the Ray node this process runs on, or ``None`` outside a Ray worker.

    Ray is never imported here: a process that has not imported it is not a Ray worker
    (Flower's actors import it before they run the ClientApp), and a deployed node must
    not pay for the import.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return f"ray:{ray.get_runtime_context().get_node_id()}"
