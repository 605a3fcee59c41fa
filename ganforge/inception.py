"""Inception-v3 features, for natural images, from a weights file the user supplies.

The network is the one FID was defined with (TensorFlow's 2015-12-05 Inception graph), as
torch-fidelity ports it, so that scores compare with published ones. ganforge never downloads
it: the user points ``--inception-weights FILE``, ``eval.inception_weights`` or the environment
variable ``GANFORGE_INCEPTION_WEIGHTS`` at torch-fidelity's file, and its SHA-256 is checked
before it is read. The 2,048 pooled features (``pool3``) are what FID, KID and precision/recall
compare; grey images are repeated over three channels. The Inception Score reads the classifier
on top of them: the file's ``fc`` layer (2,048 -> the 2015 graph's 1,008 ImageNet class slots), its
weights without its bias, as openai/improved-gan ``inception_score/model.py`` multiplies ``pool_3``
by ``softmax/logits/MatMul``'s weights alone and torch-fidelity reads ``logits_unbiased`` for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .evaluator import EvaluatorError, as_8bit, sha256_of

WEIGHTS_ENV = "GANFORGE_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
LAYER = "pool3-2048"
FEATURE_DIM = 2048
#: What the Inception Score reads: ``pool3`` times the ``fc`` weights, no bias (torch-fidelity's ``isc`` layer).
LOGITS_LAYER = "logits_unbiased-1008"
INPUT_SIZE = 299  # torch-fidelity's FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE
#: What torch-fidelity's FeatureExtractorInceptionV3.forward does to the 8-bit images it is given.
PREPARATION = (f"8-bit, grey repeated over 3 channels, resized to {INPUT_SIZE}x{INPUT_SIZE} bilinear as TensorFlow 1.x"
               " (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x)")
NAME = "inception"  # what --evaluator and eval.evaluator say to choose it


def weights_path(given: Path | str | None) -> Path:
    """The weights file: the one given, else ``$GANFORGE_INCEPTION_WEIGHTS``; a one-line error
    saying how to provide one when there is none."""
    path = given or os.environ.get(WEIGHTS_ENV)
    if not path:
        raise EvaluatorError(
            f"Inception-v3 features need torch-fidelity's weights file {WEIGHTS_FILE} (sha256 {WEIGHTS_SHA256[:16]}...):"
            f" download it yourself from {WEIGHTS_URL} and pass --inception-weights FILE (or set eval.inception_weights,"
            f" or {WEIGHTS_ENV}); ganforge downloads nothing")
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvaluatorError(f"no Inception-v3 weights file at {path} (from {'the setting' if given else WEIGHTS_ENV})")
    return path


class InceptionFeatures:
    """A verified Inception-v3, with the interface of :class:`ganforge.evaluator.Evaluator`."""

    preparation = PREPARATION
    feature_dim = FEATURE_DIM
    logits_layer = (f"{LOGITS_LAYER} (pool3 x fc.weight, without fc.bias, as improved-gan's inception_score and"
                    " torch-fidelity's isc read it)")

    def __init__(self, path: Path, expected_sha256: str = WEIGHTS_SHA256):
        digest = sha256_of(path)
        if digest != expected_sha256:
            raise EvaluatorError(
                f"{path} is not the Inception-v3 weights FID is defined with: its sha256 is {digest[:16]}...,"
                f" expected {expected_sha256[:16]}... ({WEIGHTS_FILE} from {WEIGHTS_URL})")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            # One pass gives both: the pooled features and the unbiased logits one matrix product later.
            self.net = FeatureExtractorInceptionV3(NAME, ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path=str(path))
        except Exception as error:  # the right checksum yet unreadable: a torch-fidelity that changed its layout
            raise EvaluatorError(f"{path} cannot be read as Inception-v3 ({type(error).__name__}: {error})") from None
        self.path = Path(path)
        self.record = {"dataset": "imagenet", "split": "train", "trained_on": "ImageNet's 1,281,167",
                       "held_out": {"accuracy": "as published"}, "layer": LAYER, "feature_dim": FEATURE_DIM, "sha256": digest,
                       "library": "torch-fidelity FeatureExtractorInceptionV3"}

    @property
    def sha256(self) -> str:
        return self.record["sha256"]

    def features(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """2,048 pooled features of images in [-1, 1] (float, rounded to 8 bits) or uint8, resized to 299 px inside."""
        return self._map(images, batch, 0)

    def class_logits(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(B, 1,008) logits of ImageNet's classes, the ``fc`` layer without its bias: what the
        Inception Score's softmax is taken of."""
        return self._map(images, batch, 1)

    @torch.inference_mode()
    def _map(self, images: torch.Tensor, batch: int, output: int) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch):
            part = as_8bit(images[start:start + batch])
            if part.shape[1] == 1:
                part = part.expand(-1, 3, -1, -1)
            out.append(self.net(part.contiguous())[output].float().cpu())
        return torch.cat(out)

    def classify(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        raise EvaluatorError("Inception-v3 knows ImageNet's classes, not the run's: metrics that classify"
                             " (generated-agreement, continuous-codes) need the dataset's own feature network")
