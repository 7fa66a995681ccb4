"""Evaluation suite: every metric of the seed papers and of the disentanglement literature.

Arrays in, plain dict out, registered by name (:mod:`facefactors.metrics.registry`). Importing
this package registers every metric; ``available()`` lists them and ``get_metric(name)`` returns
one. Metrics know nothing of torch models: numpy / scipy / scikit-learn only.
"""

from facefactors.metrics import correlation as _correlation  # noqa: F401  (registration side effects)
from facefactors.metrics import dci as _dci  # noqa: F401
from facefactors.metrics import disco as _disco  # noqa: F401
from facefactors.metrics import embedding as _embedding  # noqa: F401
from facefactors.metrics import image_quality as _image_quality  # noqa: F401
from facefactors.metrics import interventional as _interventional  # noqa: F401
from facefactors.metrics import irs as _irs  # noqa: F401
from facefactors.metrics import mig as _mig  # noqa: F401
from facefactors.metrics import modularity as _modularity  # noqa: F401
from facefactors.metrics import probing as _probing  # noqa: F401
from facefactors.metrics import sap as _sap  # noqa: F401
from facefactors.metrics import subspace as _subspace  # noqa: F401
from facefactors.metrics import unsupervised as _unsupervised  # noqa: F401
from facefactors.metrics.correlation import projection_correlation
from facefactors.metrics.dci import dci
from facefactors.metrics.disco import (
    disentanglement_score,
    ds_from_sampler,
    w_direction_consistency,
)
from facefactors.metrics.embedding import embed_2d
from facefactors.metrics.image_quality import feature_distances, image_quality
from facefactors.metrics.interventional import beta_vae_score, factor_vae_score
from facefactors.metrics.irs import irs
from facefactors.metrics.mig import mig
from facefactors.metrics.modularity import explicitness, modularity
from facefactors.metrics.probing import linear_probe, verification_10fold
from facefactors.metrics.registry import available, get_metric, register
from facefactors.metrics.sampler import GroundTruthSampler, generate_codes
from facefactors.metrics.sap import sap
from facefactors.metrics.subspace import silhouette_matrix, weak_classifier_matrix
from facefactors.metrics.unsupervised import total_correlation

__all__ = [
    "GroundTruthSampler",
    "available",
    "beta_vae_score",
    "dci",
    "disentanglement_score",
    "ds_from_sampler",
    "embed_2d",
    "explicitness",
    "factor_vae_score",
    "feature_distances",
    "generate_codes",
    "get_metric",
    "image_quality",
    "irs",
    "linear_probe",
    "mig",
    "modularity",
    "projection_correlation",
    "register",
    "sap",
    "silhouette_matrix",
    "total_correlation",
    "verification_10fold",
    "w_direction_consistency",
    "weak_classifier_matrix",
]
