"""Old name of :mod:`idgenrec.baselines.popularity` (see idgenrec/models/__init__.py)."""

from idgenrec.baselines.popularity import PopularityRecommender, popularity_metrics  # noqa: F401
