"""pas: Personality Activation Search — align an LLM to one person's personality by activation steering."""

from pas.core.arch import AttnOutSpec, register_architecture
from pas.core.data import ItemBank, Subject, load_items, load_papi, load_subjects
from pas.core.models import load_model
from pas.core.version import __version__ as __version__
from pas.fit.align import FitReport, align_to_subject, fit_subject
from pas.fit.config import GatedConfig, PASConfig
from pas.score.assess import Assessment
from pas.score.scorer import ItemScorer
from pas.space.poles import group_vector, pole_vectors, type_vector
from pas.steer.vector import SteeringVector

__all__ = [
    "Assessment", "AttnOutSpec", "FitReport", "GatedConfig", "ItemBank", "ItemScorer", "PASConfig", "SteeringVector",
    "Subject", "align_to_subject", "fit_subject", "group_vector",
    "load_items", "load_model", "load_papi", "load_subjects", "pole_vectors", "register_architecture", "type_vector",
]
