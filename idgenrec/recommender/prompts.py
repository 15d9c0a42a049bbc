"""Prompt templates: a user's history written in textual IDs -> the next item's ID.

Ten paraphrases for training (drawn at random per sample, as in the paper), template 0
at validation and test. ``{user}`` is present only when user IDs are switched on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

HISTORY_SEPARATOR = " ; "

TEMPLATES: tuple[str, ...] = (
    "Considering {user} has interacted with items {history} . What is the next recommendation for the user ?",
    "Here is the purchase history of {user} : {history} . What to recommend next for the user ?",
    "{user} has interacted with the following items in order : {history} . Predict the next item the user will interact with .",
    "Given the interaction history {history} of {user} , which item comes next ?",
    "{user} recently chose {history} . Recommend the next item for this user .",
    "Based on the items {history} that {user} liked , what should be recommended next ?",
    "The history of {user} is {history} . Can you predict the next possible item ?",
    "What is the next item for {user} , who has interacted with {history} ?",
    "After {history} , which item would {user} choose next ?",
    "Sequence of items for {user} : {history} . Generate the next item .",
)

ANONYMOUS_USER = "the user"

# The causal recommender's fixed opening, before the user's items written as `id ; id ; ... ;`.
# Its words are all in TEMPLATES, so it adds nothing to a pruned vocabulary.
SEQUENCE_INSTRUCTION = "Sequence of items for the user :"


def render_prompt(history_ids: Sequence[str], template: int = 0, user_id: str | None = None) -> str:
    """Fill one template with the history's textual IDs (oldest first)."""
    user = f"user {user_id}" if user_id else ANONYMOUS_USER
    return TEMPLATES[template].format(user=user, history=HISTORY_SEPARATOR.join(history_ids))


def draw_template(rng: random.Random, mode: str) -> int:
    """Template index for one training sample: any paraphrase, or always the test one."""
    return rng.randrange(len(TEMPLATES)) if mode == "all" else 0


def prompt_vocabulary_text() -> str:
    """All fixed words of the prompts, so a pruned vocabulary keeps them."""
    return " ".join(TEMPLATES) + f" {ANONYMOUS_USER} user{HISTORY_SEPARATOR}"
