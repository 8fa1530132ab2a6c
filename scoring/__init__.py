"""Tower quality scoring: temporal stability, motion, consistency and a composite score.

No Kafka here: the scorer agent calls :class:`Scorer` and publishes the results.
See docs/SCORING.md for definitions, conventions and performance notes.
"""

from scoring.composite import CompositeWeights, SubscoreScales
from scoring.config import SCORER_VERSION, ScorerConfig
from scoring.consistency import EmbeddingBackend, WeightFreeEmbedding
from scoring.models import ShotInput, ShotScore
from scoring.scorer import DeviceBusy, Scorer
from scoring.ssim import ssim_between, ssim_pairs

__all__ = [
    "SCORER_VERSION",
    "CompositeWeights",
    "DeviceBusy",
    "EmbeddingBackend",
    "Scorer",
    "ScorerConfig",
    "ShotInput",
    "ShotScore",
    "SubscoreScales",
    "WeightFreeEmbedding",
    "ssim_between",
    "ssim_pairs",
]
