"""Audio feature extractors: ``logmel``, ``mfcc`` and ``egemaps`` (docs/AUDIO.md).

Importing this package registers them. Heavy libraries (opensmile) are imported only when features
are computed, so listing extractors and validating params stays light.
"""

from pipeline.extractors.audio.egemaps import EgemapsConfig, EgemapsExtractor
from pipeline.extractors.audio.logmel import LogMelConfig, LogMelExtractor
from pipeline.extractors.audio.mfcc import MfccConfig, MfccExtractor

__all__ = [
    "EgemapsConfig",
    "EgemapsExtractor",
    "LogMelConfig",
    "LogMelExtractor",
    "MfccConfig",
    "MfccExtractor",
]
