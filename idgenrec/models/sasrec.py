"""Old name of :mod:`idgenrec.baselines.sasrec` (see idgenrec/models/__init__.py).

Setting an attribute here (a benchmark swapping ``dropout`` for a variant) sets it in the
submodule that defines it, so the swap reaches the network as it did before the split.
"""

import sys
import types

from idgenrec.baselines.sasrec import *  # noqa: F401,F403
from idgenrec.baselines.sasrec import network, recommender, storage, training

_HOMES = (network, training, storage, recommender)


class _Forwarding(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        for home in _HOMES:
            if name in vars(home):
                setattr(home, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Forwarding
