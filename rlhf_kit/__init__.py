"""RLHF Lab Kit: the package behind the course notebooks.

Importing it switches the Hugging Face libraries to offline mode: the course never downloads a model or a
data set at run time; every model is trained by the kit or loaded from a local directory.
"""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The kit shows its own progress bars; transformers' per-file "Loading weights" bars only clutter the labs.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.disable_progress_bar()

__version__ = "0.1.0"
