"""Model registry: versions of ``idgenrec-<dataset>``, aliases ``challenger`` and ``champion``.

``versions`` (register, find, list), ``promotion`` (the rule, promote, roll back), ``records``
(the pipeline's register step: log, register, judge), ``growth`` (the champion plus new items).
"""

from idgenrec.registry.growth import Growth, grow_champion, growth_check, new_items_digest
from idgenrec.registry.promotion import PromotionDecision, promote, rollback
from idgenrec.registry.records import (
    record_model_folder,
    record_pipeline_run,
    register_logged_run,
    registry_record,
)
from idgenrec.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    DIGEST_TAG,
    GROWN_FROM_TAG,
    METRIC_TAG,
    NEW_ITEMS_TAG,
    POPULARITY_TAG,
    PREVIOUS_TAG,
    REASON_TAG,
    SCORE_TAG,
    RegistryError,
    VersionSummary,
    champion_model,
    list_versions,
    register_version,
    registered_model_name,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "DECISION_TAG", "DIGEST_TAG", "GROWN_FROM_TAG", "METRIC_TAG", "NEW_ITEMS_TAG",
    "POPULARITY_TAG", "PREVIOUS_TAG", "REASON_TAG", "SCORE_TAG", "Growth", "PromotionDecision", "RegistryError",
    "VersionSummary", "champion_model", "grow_champion", "growth_check", "list_versions", "new_items_digest",
    "promote", "record_model_folder", "record_pipeline_run", "register_logged_run", "register_version",
    "registered_model_name", "registry_record", "rollback",
]
