"""Cascade: recall first, precision second.

A fast first stage (BM25 + dense, fused) gathers candidates; a cross-encoder reranks the top few
jointly with the query; the best handful go to the LLM.
"""

from cascade._version import __version__
from cascade.documents import Document, Passage, load_documents
from cascade.errors import CascadeError
from cascade.pipeline import Cascade
from cascade.results import Hit, SearchResult
from cascade.rerank import CrossEncoder, Reranker
from cascade.rerank.late_interaction import LateInteraction
from cascade.rerank.llm import LLMReranker
from cascade.settings import SearchSettings

__all__ = ["Cascade", "CascadeError", "CrossEncoder", "Document", "Hit", "LLMReranker", "LateInteraction", "Passage",
           "Reranker", "SearchResult", "SearchSettings", "load_documents", "__version__"]
