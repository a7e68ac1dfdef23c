"""Cascade: recall first, precision second.

A fast first stage (BM25 + dense, fused) gathers candidates; a cross-encoder reranks the top few
jointly with the query; the best handful go to the LLM.
"""

__version__ = "0.1.0"

from cascade.documents import Document, Passage, load_documents  # noqa: E402
from cascade.errors import CascadeError  # noqa: E402
from cascade.pipeline import Cascade, Hit, SearchResult  # noqa: E402
from cascade.rerank import CrossEncoder, Reranker  # noqa: E402
from cascade.rerank.late_interaction import LateInteraction  # noqa: E402
from cascade.rerank.llm import LLMReranker  # noqa: E402

__all__ = ["Cascade", "CascadeError", "CrossEncoder", "Document", "Hit", "LLMReranker", "LateInteraction", "Passage",
           "Reranker", "SearchResult", "load_documents", "__version__"]
