import os

# ``functional`` is torch-free; the metrics import mmdet. Light tools (tools/analysis_tools/eval_results.py) set
# MMDET_CUSTOM_NO_REGISTER=1 and import only ``mmdet_custom.evaluation.functional``.
if os.environ.get('MMDET_CUSTOM_NO_REGISTER', '') in ('', '0'):
    from .metrics import *  # noqa: F401,F403
