"""Experiment workflow around the app: the ``edgebloom`` command (runs, compare, sweep).

Not part of the Flower app (it is not in the FAB): it reads the run directories the
ServerApp writes and starts ``flwr run`` for sweeps. Framework-free apart from reading the
app's own declarations (``tasks.config``, the strategy registry) and Flower's run-config
parser, so it validates exactly what the app would.
"""
