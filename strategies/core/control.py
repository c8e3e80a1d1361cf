"""Control flow shared by strategies and the ServerApp."""


class StopTraining(Exception):  # noqa: N818 - a signal, not an error
    """A strategy ends the run early and cleanly (e.g. the privacy budget is spent).

    The ServerApp keeps the last global model and every recorded round, marks the run
    ``stopped`` in metrics.json with this exception's message, and writes all outputs.
    """
