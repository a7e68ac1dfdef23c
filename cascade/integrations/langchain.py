"""LangChain: a retriever over a Cascade index, and a document compressor that reranks with a cross-encoder.

    pip install 'cascade-retrieval[langchain]'

    retriever = CascadeRetriever(engine=Cascade.load("./idx"), top=5)
    docs = retriever.invoke("why does p99 latency rise under load?")   # Document(page_content, metadata)
    compressor = CascadeRerank(model=CrossEncoder("cascade-reranker"), top_n=3)
"""

from __future__ import annotations

from typing import Any, Sequence

from cascade.errors import CascadeError

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict
except ImportError:  # pragma: no cover - exercised only without the extra
    raise CascadeError("the LangChain integration needs langchain-core: pip install 'cascade-retrieval[langchain]'") \
        from None


def hit_metadata(hit) -> dict[str, Any]:
    """What a hit carries besides its text: its document's metadata, ids, title, final score and rank, per-stage
    scores."""
    return {**hit.metadata, "id": hit.id, "doc_id": hit.doc_id, "title": hit.title, "score": hit.score,
            "rank": hit.rank, "stage_scores": hit.stage_scores}


class CascadeRetriever(BaseRetriever):
    """The whole cascade (retrieve, fuse, rerank within the budget) as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    engine: Any  # a cascade.Cascade
    top: int = 5
    settings: dict[str, Any] = {}  # any SearchSettings field, e.g. {"rerank_depth": 50, "budget_ms": None}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        result = self.engine.search(query, top=self.top, **self.settings)
        return [Document(page_content=h.text, metadata=hit_metadata(h)) for h in result.hits]


class CascadeRerank(BaseDocumentCompressor):
    """Reorders any retriever's documents by a cross-encoder (`ContextualCompressionRetriever`'s compressor)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: Any  # a cascade.CrossEncoder (or any cascade Reranker)
    top_n: int = 3

    def compress_documents(self, documents: Sequence[Document], query: str, callbacks: Any = None) -> list[Document]:
        if not documents:
            return []
        ranked = self.model.rank(query, [d.page_content for d in documents], top_k=self.top_n)
        return [Document(page_content=documents[r["corpus_id"]].page_content,
                         metadata={**documents[r["corpus_id"]].metadata, "relevance_score": float(r["score"])})
                for r in ranked]
