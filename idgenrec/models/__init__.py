"""Recommenders that implement :class:`idgenrec.evaluation.Recommender`."""
