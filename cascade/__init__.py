"""Cascade: recall first, precision second.

A fast first stage (BM25 + dense, fused) gathers candidates; a cross-encoder reranks the top few
jointly with the query; the best handful go to the LLM.

The names below load on first use, so `import cascade` (and `cascade --version`) stays light.
"""

from typing import TYPE_CHECKING

from cascade._lazy import lazy_exports
from cascade._version import __version__

if TYPE_CHECKING:
    from cascade.documents import Document, Passage, load_documents
    from cascade.errors import CascadeError
    from cascade.pipeline import Cascade
    from cascade.rerank.base import Reranker
    from cascade.rerank.cross_encoder import CrossEncoder
    from cascade.rerank.late_interaction import LateInteraction
    from cascade.rerank.llm import LLMReranker
    from cascade.results import Hit, SearchResult
    from cascade.settings import SearchSettings

__all__ = ["Cascade", "CascadeError", "CrossEncoder", "Document", "Hit", "LLMReranker", "LateInteraction", "Passage",
           "Reranker", "SearchResult", "SearchSettings", "load_documents", "__version__"]
__getattr__ = lazy_exports(__name__, {
    "Cascade": "cascade.pipeline", "CascadeError": "cascade.errors", "CrossEncoder": "cascade.rerank.cross_encoder",
    "Document": "cascade.documents", "Passage": "cascade.documents", "load_documents": "cascade.documents",
    "Hit": "cascade.results", "SearchResult": "cascade.results", "LLMReranker": "cascade.rerank.llm",
    "LateInteraction": "cascade.rerank.late_interaction", "Reranker": "cascade.rerank.base",
    "SearchSettings": "cascade.settings"})
