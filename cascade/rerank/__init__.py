"""Second stage: rerankers behind one protocol (`base.Reranker`: `predict`, `rank`), and the rule for which
one runs by default (`factory.load_reranker`).

The names below load on first use: importing a reranker loads torch, which the light imports (settings,
the CLI's parser, `cascade --version`) do without.
"""

from typing import TYPE_CHECKING

from cascade._lazy import lazy_exports

if TYPE_CHECKING:
    from cascade.rerank.base import Reranker
    from cascade.rerank.cross_encoder import CrossEncoder
    from cascade.rerank.factory import RerankerChoice, load_reranker
    from cascade.rerank.late_interaction import LateInteraction
    from cascade.rerank.llm import LLMReranker

__all__ = ["CrossEncoder", "LateInteraction", "LLMReranker", "Reranker", "RerankerChoice", "load_reranker"]
__getattr__ = lazy_exports(__name__, {
    "CrossEncoder": "cascade.rerank.cross_encoder", "LateInteraction": "cascade.rerank.late_interaction",
    "LLMReranker": "cascade.rerank.llm", "Reranker": "cascade.rerank.base",
    "RerankerChoice": "cascade.rerank.factory", "load_reranker": "cascade.rerank.factory"})
