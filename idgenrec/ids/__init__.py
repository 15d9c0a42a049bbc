"""Textual item IDs: warm-up of the ID generator, unique diverse generation, the ID table.

``trie`` (constrained decoding) is imported on its own by the recommender.
"""

from idgenrec.ids.kinds import make_id_table, random_ids, title_ids
from idgenrec.ids.table import ItemIdTable, id_quality
from idgenrec.ids.unique import generate_unique_ids
from idgenrec.ids.warmup import warm_up_generator

__all__ = [
    "ItemIdTable",
    "generate_unique_ids",
    "id_quality",
    "make_id_table",
    "random_ids",
    "title_ids",
    "warm_up_generator",
]
