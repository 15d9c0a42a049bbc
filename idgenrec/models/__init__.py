"""Old name of :mod:`idgenrec.baselines`, kept only for scripts under benchmarks/ that still import it.

New code imports :mod:`idgenrec.baselines`.
"""
