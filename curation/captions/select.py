"""The old name of curation/captions/where.py (the --where filter); kept importable."""

from .where import FilterError, select_rows

__all__ = ["FilterError", "select_rows"]
