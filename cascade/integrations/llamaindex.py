"""LlamaIndex: a retriever over a Cascade index, and a node postprocessor that reranks with a cross-encoder.

    pip install 'cascade-retrieval[llamaindex]'

    retriever = CascadeRetriever(Cascade.load("./idx"), top=5)
    nodes = retriever.retrieve("why does p99 latency rise under load?")   # NodeWithScore(TextNode, score)
    engine = index.as_query_engine(node_postprocessors=[CascadeRerank(model=CrossEncoder("cascade-reranker"))])
"""

from __future__ import annotations

from typing import Any

from cascade.errors import CascadeError

try:
    from llama_index.core.bridge.pydantic import ConfigDict
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError:  # pragma: no cover - exercised only without the extra
    raise CascadeError("the LlamaIndex integration needs llama-index-core: "
                       "pip install 'cascade-retrieval[llamaindex]'") from None


class CascadeRetriever(BaseRetriever):
    """The whole cascade (retrieve, fuse, rerank within the budget) as a LlamaIndex retriever."""

    def __init__(self, engine, top: int = 5, settings: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._engine, self._top, self._settings = engine, top, settings or {}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        result = self._engine.search(query_bundle.query_str, top=self._top, **self._settings)
        return [NodeWithScore(node=TextNode(id_=h.id, text=h.text, metadata={**h.metadata, "doc_id": h.doc_id,
                                                                            "title": h.title, "rank": h.rank}),
                                 score=h.score)
                for h in result.hits]


class CascadeRerank(BaseNodePostprocessor):
    """Reorders any retriever's nodes by a cross-encoder; keeps the best `top_n`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: Any  # a cascade.CrossEncoder (or any cascade Reranker)
    top_n: int = 3

    @classmethod
    def class_name(cls) -> str:
        return "CascadeRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
                           ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise CascadeError("CascadeRerank needs the query: call it with query_bundle (or query_str)")
        if not nodes:
            return []
        ranked = self.model.rank(query_bundle.query_str, [n.node.get_content() for n in nodes], top_k=self.top_n)
        return [NodeWithScore(node=nodes[r["corpus_id"]].node, score=float(r["score"])) for r in ranked]
