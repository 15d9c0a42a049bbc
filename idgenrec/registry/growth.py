"""New items into the served model without training: the champion grown by add-items, scored, registered.

One implementation behind ``idgenrec registry add-items`` and the Prefect catalogue refresh
(flows/add_items.py), with the same options. The grown version carries tag ``grown_from``, so
the promotion rule asks it to keep the champion's score within the margin rather than beat it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from mlflow import MlflowClient

from idgenrec.registry.records import record_model_folder
from idgenrec.registry.versions import (
    DECISION_TAG,
    GROWN_FROM_TAG,
    NEW_ITEMS_TAG,
    REASON_TAG,
    champion_model,
    registered_model_name,
)

if TYPE_CHECKING:
    from idgenrec.config import Params
    from idgenrec.recommender.new_items import NewItems


@dataclass(frozen=True)
class Growth:
    """What :func:`grow_champion` did: grew champion ``champion`` (``record`` and ``stats``), or
    nothing, for the reason in ``skipped``."""

    champion: str
    record: dict | None = None  # the registry record of the grown version
    stats: dict | None = None  # add_items' counts: items added, already known, tokens added
    skipped: str | None = None


def grow_champion(
    params: "Params",
    items: "NewItems",
    output: str | Path,
    prepared: str | Path,
    *,
    root: str | Path,
    kind: str | None = None,
    own_tokens: bool = True,
    promote_model: bool = True,
    tags: dict[str, str] | None = None,
) -> Growth:
    """The champion plus ``items``, saved to ``output``, scored on ``prepared``, registered and judged.

    ``kind``: the ID kind the champion was trained with (default ``ids.kind``); ``own_tokens``:
    learned IDs only from tokens of the item's own text. Nothing is grown (``skipped`` says why)
    when the champion knows every item, or when these items were already added to it.
    """
    from idgenrec.ids.kinds import IdKind
    from idgenrec.recommender.new_items import add_items

    kind = kind or params.ids.kind
    if kind not in get_args(IdKind):
        raise ValueError(f"ID kind must be one of {', '.join(get_args(IdKind))}, got {kind!r}")
    name = registered_model_name(params.data.label)
    version, champion = champion_model(name)
    digest, reason_not_to = growth_check(name, version, champion, items)
    if reason_not_to:
        return Growth(champion=version, skipped=reason_not_to)
    grown, stats = add_items(champion, items, kind, params.ids, own_tokens=own_tokens)
    grown.save(output)
    record = record_model_folder(
        params, output, prepared, root=root, tags=tags, promote_model=promote_model, grown_from=version,
        new_items_digest=digest,
    )
    return Growth(champion=version, record=record, stats=stats)


def new_items_digest(known: Iterable[str], items: "NewItems") -> str | None:
    """Names the items a model lacks: SHA-256 over their sorted (id, text) pairs; None when it has them all."""
    known = set(known)
    fresh = sorted((item, text) for item, text in zip(items.item_ids, items.texts) if item not in known)
    return hashlib.sha256(json.dumps(fresh).encode()).hexdigest()[:16] if fresh else None


def growth_check(name: str, version: str, champion, items: "NewItems") -> tuple[str | None, str | None]:
    """(digest of the items champion ``version`` lacks, why not to grow it: None when it should be).

    Not when there is nothing new, nor when a version was already grown from this champion with
    exactly these items: its decision stands. A rejected one would otherwise be scored and
    registered again by every scheduled run, and a rollback from a grown champion to its parent
    would be undone by the next one.
    """
    digest = new_items_digest(champion.id_table.item_ids, items)
    if digest is None:
        return None, f"every item is already known to champion v{version} of {name}: nothing to add"
    earlier = MlflowClient().search_model_versions(
        f"name = '{name}' and tags.{GROWN_FROM_TAG} = '{version}' and tags.{NEW_ITEMS_TAG} = '{digest}'"
    )
    if earlier:
        first = min(earlier, key=lambda v: int(v.version))
        decision = first.tags.get(DECISION_TAG, "not judged")
        return digest, (
            f"these new items were already added to champion v{version} as v{first.version} "
            f"({decision}: {first.tags.get(REASON_TAG, 'no reason recorded')}); not registered again"
        )
    return digest, None
