"""TUF repositories of the controller: the image repo (what may run) and the director (who
runs what). Build one :class:`TufRepositories` in ``main()`` and pass it around.
"""

from edgefleet.controller.signing.director_repo import DirectorRepository
from edgefleet.controller.signing.image_repo import ImageRepository
from edgefleet.controller.signing.keys import KeyStore, load_signer
from edgefleet.controller.signing.repositories import TufRepositories, utc_now
from edgefleet.controller.signing.targets import (
    MODELS_PATHS,
    MODELS_ROLE,
    TargetInfo,
    model_target_path,
)

__all__ = [
    "MODELS_PATHS",
    "MODELS_ROLE",
    "DirectorRepository",
    "ImageRepository",
    "KeyStore",
    "TargetInfo",
    "TufRepositories",
    "load_signer",
    "model_target_path",
    "utc_now",
]
