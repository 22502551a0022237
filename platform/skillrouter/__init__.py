"""skillrouter: route a request to the right agent skill among tens of thousands.

`Router` and `Skill` are imported lazily, so that a worker that needs one module (an encoder on a GPU host, say)
does not import the whole package and its dependencies.
"""

__all__ = ["Route", "Router", "Skill"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("Route", "Router"):
        from skillrouter.retrieval import router as routing

        return getattr(routing, name)
    if name == "Skill":
        from skillrouter.corpus.skill import Skill

        return Skill
    raise AttributeError(f"module 'skillrouter' has no attribute {name!r}")
