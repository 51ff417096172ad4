"""RLHF Lab Kit: the package behind the course notebooks.

Importing it switches the Hugging Face libraries to offline mode: the course never downloads a model or a
data set at run time; every model is trained by the kit or loaded from a local directory.
"""

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The kit shows its own progress bars; transformers' per-file "Loading weights" bars only clutter the labs. They
# start off when huggingface_hub's do (the variable below); if either library is loaded already, they are switched
# off directly. Importing the kit does not load transformers: a classroom page's kernel would weigh 35 MB more.
import sys as _sys  # noqa: E402

if "transformers" in _sys.modules or "huggingface_hub" in _sys.modules:
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
else:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"
