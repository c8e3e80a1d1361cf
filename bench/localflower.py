"""The local simulation SuperLink of the e2e tests, reused so benchmarks run Flower the same way.

``start_local_flower`` starts ``flower-superlink --simulation`` with its own ``FLWR_HOME``
and ports and returns its PID; ``stop_process_tree`` ends it and everything it started
(SuperExec, the simulation process, Ray) by process group.
"""

from harness.processes import BIN, REPO, LocalFlower, process_groups, start_local_flower, stop_process_tree

__all__ = ["BIN", "REPO", "LocalFlower", "process_groups", "start_local_flower", "stop_process_tree"]
