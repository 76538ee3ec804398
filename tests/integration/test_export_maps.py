"""Every anomaly map (error measure, normalisation, DAAD+ mix, defect segmenter) stays inside the exported graph.

Tiny untrained networks with stored normal statistics and measure weights (as after training), exported
with anomalib's ``to_onnx`` and run in OpenVINO at FP32 and in ONNX Runtime: maps and scores must equal
the PyTorch forward within 1e-4, for an input size other than the statistics' size too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_divass import DivideAssemble

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4
# "auto" computes all three measures (l2, ssim, msgms); pixel and global statistics; latent mix; no skips;
# the defect segmenter's map (with the default map arguments, which it does not use).
CASES = [("auto", "pixel", "DAAD+", False), ("msgms", "global", "MemAE", False), ("auto", "auto", "DAAD+", True)]


def _model(measure: str, normalization: str, variant: str, segmentation: bool) -> DivideAssemble:
    torch.manual_seed(0)
    model = DivideAssemble(
        channels=[8, 16, 16],
        granularity=[4, 2, 2],
        num_items=8,
        variant=variant,
        error_measure=measure,
        normalization=normalization,
        latent_weight=0.3,
        segmentation=segmentation,
        pre_processor=DivideAssemble.configure_pre_processor(image_size=(64, 64)),
        post_processor=False,
        evaluator=False,
        visualizer=False,
    ).eval()
    generator = model.model.anomaly_map
    count = len(generator.measures)
    if normalization != "none" and not segmentation:
        size = (1, 1) if normalization == "global" else (64, 64)
        generator.set_statistics("normal", torch.rand(1, count, *size) * 0.1, torch.rand(1, count, *size) + 0.5)
        generator.set_statistics("latent", torch.rand(1, 1, *size) * 0.1, torch.rand(1, 1, *size) + 0.5)
    if count > 1:
        generator.set_measure_weights(torch.tensor([0.0, 0.0, 1.0]))
    if segmentation:  # an untrained segmenter's logits hardly vary: spread them as a trained one's do
        with torch.no_grad():
            model.model.segmenter.head.weight.mul_(300.0)
    return model


@pytest.mark.parametrize(("measure", "normalization", "variant", "segmentation"), CASES)
def test_exported_map_matches_pytorch(
    measure: str, normalization: str, variant: str, segmentation: bool, tmp_path: Path
) -> None:
    import onnxruntime
    import openvino as ov

    model = _model(measure, normalization, variant, segmentation)
    path = model.to_onnx(tmp_path, input_size=None)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(64, 64), (80, 96)]:  # the second is resized by the graph's pre-processor
        images = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = model(images)
        reference = {"pred_score": expected.pred_score.numpy(), "anomaly_map": expected.anomaly_map.numpy()}
        assert float(expected.anomaly_map.std()) > 20 * TOLERANCE, "the map is too flat for parity to mean much"
        openvino_out = {output.get_any_name(): value for output, value in compiled(images.numpy()).items()}
        names = [output.name for output in session.get_outputs()]
        onnx_out = dict(zip(names, session.run(None, {"input": images.numpy()}), strict=True))
        for where, actual in (("openvino", openvino_out), ("onnxruntime", onnx_out)):
            for name, value in reference.items():
                difference = np.abs(actual[name].reshape(value.shape) - value).max()
                assert difference <= TOLERANCE, f"{where} {size} {name}: differs by {difference}"
