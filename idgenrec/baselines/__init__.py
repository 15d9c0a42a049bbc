"""Baselines scored by the same protocol as IDGenRec: popularity and SASRec.

Each implements :class:`idgenrec.evaluation.Recommender`.
"""
