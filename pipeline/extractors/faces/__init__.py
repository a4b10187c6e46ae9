"""The face stage: MTCNN detection + tracking, 5-point alignment, crops into the store (docs/FACES.md).

Importing this package registers the ``faces`` extractor; torch and the networks load only in
``setup``/``extract``.
"""

from avpipe.pipeline.extractors.faces.config import CropMode, FacesConfig, MissingPolicy, Selection
from avpipe.pipeline.extractors.faces.extractor import FacesExtractor

__all__ = ["CropMode", "FacesConfig", "FacesExtractor", "MissingPolicy", "Selection"]
