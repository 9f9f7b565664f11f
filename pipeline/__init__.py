"""medsr.pipeline: data, losses, engines, metrics, evaluation, inference, tracking and the ``medsr`` command.

Kept light on purpose: importing ``medsr.pipeline`` imports no sub-package (and neither torch nor MONAI).
"""

import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# MONAI's LoadImage registers every reader it knows, and its nvImageCodec DICOM reader reports twice, on every
# read, that nvImageCodec (a CUDA decoder) is missing. medsr reads DICOM with pydicom and ITK, so the two lines
# say nothing to a user: silence exactly those two messages (in every process that imports medsr).
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
_warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")
