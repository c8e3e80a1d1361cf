"""Server-side algorithms as Flower Message-API strategies, selected by name.

The folders are the architecture (docs/architecture.md):

- ``algorithms/``: one aggregation rule per file (FedAvg, FedProx, robust rules, server
  optimizers, FedBuff), each subclassing the closest strategy and overriding one hook;
- ``wrappers/``: cross-cutting mechanisms that wrap any strategy (user-level DP,
  update compression);
- ``core/``: what every strategy shares: records, reply validation and identity,
  sampling, the round loop, deadlines, the registry;
- ``numeric/``: the math, as plain NumPy functions with no Flower types.

``python -m strategies list`` prints every registered strategy with its keys.
"""
