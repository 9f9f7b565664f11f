"""medsr.pipeline: data, losses, engines, metrics, evaluation, inference, tracking and the ``medsr`` command.

Kept light on purpose: importing ``medsr.pipeline`` imports no sub-package (and neither torch nor MONAI).
"""

__version__ = "0.1.0"
