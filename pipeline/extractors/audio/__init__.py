"""Audio feature extractors: ``logmel``, ``mfcc``, ``egemaps``, ``speech`` and ``hf-speech`` (docs/AUDIO.md).

Importing this package registers them. Heavy libraries (opensmile, torch, transformers) are imported
only when features are computed, so listing extractors and validating params stays light.
"""

from avpipe.pipeline.extractors.audio.egemaps import EgemapsConfig, EgemapsExtractor
from avpipe.pipeline.extractors.audio.hf_speech import HfSpeechConfig, HfSpeechExtractor
from avpipe.pipeline.extractors.audio.logmel import LogMelConfig, LogMelExtractor
from avpipe.pipeline.extractors.audio.mfcc import MfccConfig, MfccExtractor
from avpipe.pipeline.extractors.audio.speech import SpeechConfig, SpeechExtractor

__all__ = [
    "EgemapsConfig",
    "EgemapsExtractor",
    "HfSpeechConfig",
    "HfSpeechExtractor",
    "LogMelConfig",
    "LogMelExtractor",
    "MfccConfig",
    "MfccExtractor",
    "SpeechConfig",
    "SpeechExtractor",
]
