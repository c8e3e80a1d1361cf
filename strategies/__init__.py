"""Server-side algorithms as Flower Message-API strategies, selected by name.

Each algorithm lives in its own file; the math is in plain NumPy functions
(``aggregate.py`` and friends) with no Flower types. ``registry.py`` maps names to
strategies; ``python -m strategies list`` prints them.
"""
