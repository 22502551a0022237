"""skillrouter: route a request to the right agent skill among tens of thousands."""

from skillrouter.corpus.skill import Skill
from skillrouter.routing import Route, Router

__all__ = ["Route", "Router", "Skill"]
__version__ = "0.1.0"
