"""Inference with an exported DivideAssemble: the OpenVINO model, the folder stream, the CSV writer, the command.

* :mod:`.model`: :class:`OpenVINOModel`, anomalib's ``OpenVINOInferencer`` resizing like training.
* :mod:`.stream`: :func:`stream_predictions`, reader threads feeding OpenVINO's throughput mode.
* :mod:`.writer`: :class:`PredictionWriter`, the resumable CSV and the predicted masks.
* :mod:`.folder`: :func:`score_folder` and :func:`predict_folder`, the two together.
* :mod:`.command`: ``anomalib-divass predict-folder`` (also ``python -m anomalib_divass.inference``).
"""

from .folder import FolderSummary, predict_folder, score_folder
from .model import InputSizeError, OpenVINOModel
from .stream import Failure, Prediction, list_images, stream_predictions, throughput_model
from .writer import PredictionWriter, save_mask

__all__ = [
    "Failure",
    "FolderSummary",
    "InputSizeError",
    "OpenVINOModel",
    "Prediction",
    "PredictionWriter",
    "list_images",
    "predict_folder",
    "save_mask",
    "score_folder",
    "stream_predictions",
    "throughput_model",
]
