"""idgenrec: generative recommendation with learned textual item IDs (IDGenRec)."""

from idgenrec.offline import apply_offline_defaults

# Must run before any submodule imports transformers or mlflow (they read these at import).
apply_offline_defaults()

__version__ = "0.1.0"
