"""pas: Personality Activation Search — align an LLM to one person's personality by activation steering."""

from pas.core.version import __version__  # noqa: E402

from pas.core.arch import AttnOutSpec, register_architecture  # noqa: E402
from pas.fit.align import FitReport, align_to_subject, fit_subject  # noqa: E402
from pas.fit.config import GatedConfig, PASConfig  # noqa: E402
from pas.score.assess import Assessment  # noqa: E402
from pas.core.data import ItemBank, Subject, load_items, load_papi, load_subjects  # noqa: E402
from pas.core.models import load_model  # noqa: E402
from pas.score.scorer import ItemScorer  # noqa: E402
from pas.steer.vector import SteeringVector  # noqa: E402
from pas.space.poles import group_vector, pole_vectors, type_vector  # noqa: E402

__all__ = [
    "Assessment", "AttnOutSpec", "FitReport", "GatedConfig", "ItemBank", "ItemScorer", "PASConfig", "SteeringVector", "Subject",
    "align_to_subject", "fit_subject", "group_vector",
    "load_items", "load_model", "load_papi", "load_subjects", "pole_vectors", "register_architecture", "type_vector",
]
