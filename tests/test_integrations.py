"""LangChain and LlamaIndex, the real libraries, over a real index and the bundled cross-encoder."""

import pytest

from cascade import Cascade, CrossEncoder

QUERY = "how does the moon cause ocean tides"


@pytest.fixture(scope="module")
def engine(small_index):
    return Cascade.load(small_index, reranker=None)


@pytest.fixture(scope="module")
def model(tiny_ce):
    return CrossEncoder(str(tiny_ce))


def test_langchain_retriever_and_compressor(engine, model):
    from langchain_core.documents import Document

    from cascade.integrations.langchain import CascadeRerank, CascadeRetriever

    docs = CascadeRetriever(engine=engine, top=3, settings={"rerank_depth": 0}).invoke(QUERY)
    want = engine.search(QUERY, top=3, rerank_depth=0).hits
    assert [d.metadata["id"] for d in docs] == [h.id for h in want] and docs[0].page_content == want[0].text
    assert docs[0].metadata["stage_scores"]["bm25"] == want[0].stage_scores["bm25"]
    given = [Document(page_content=t, metadata={"k": i}) for i, t in enumerate(["Tides follow the Moon.", "Caches.",
                                                                                 "Rate limits."])]
    kept = CascadeRerank(model=model, top_n=2).compress_documents(given, QUERY)
    ranked = model.rank(QUERY, [d.page_content for d in given], top_k=2)
    assert [d.metadata["k"] for d in kept] == [r["corpus_id"] for r in ranked]
    assert kept[0].metadata["relevance_score"] == pytest.approx(ranked[0]["score"])
    assert CascadeRerank(model=model).compress_documents([], QUERY) == []


def test_llamaindex_retriever_and_postprocessor(engine, model):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from cascade import CascadeError
    from cascade.integrations.llamaindex import CascadeRerank, CascadeRetriever

    nodes = CascadeRetriever(engine, top=3, settings={"rerank_depth": 0}).retrieve(QUERY)
    want = engine.search(QUERY, top=3, rerank_depth=0).hits
    assert [n.node.node_id for n in nodes] == [h.id for h in want]
    assert nodes[0].node.get_content() == want[0].text and nodes[0].score == pytest.approx(want[0].score)
    given = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in ["Caches.", "Tides follow the Moon."]]
    kept = CascadeRerank(model=model, top_n=1).postprocess_nodes(given, query_str=QUERY)
    best = model.rank(QUERY, ["Caches.", "Tides follow the Moon."], top_k=1)[0]
    assert len(kept) == 1 and kept[0].node is given[best["corpus_id"]].node
    assert kept[0].score == pytest.approx(best["score"])
    with pytest.raises(CascadeError, match="needs the query"):
        CascadeRerank(model=model).postprocess_nodes(given)
    assert CascadeRerank(model=model).postprocess_nodes([], query_bundle=QueryBundle(QUERY)) == []


@pytest.fixture(scope="module")
def server(tiny_ce):
    from tests.conftest import Server

    running = Server("--reranker", str(tiny_ce))
    yield running
    running.stop()


DOCS = ["Caches cut latency.", "Tides follow the Moon.", "The Moon pulls the oceans, raising tides twice a day."]


def expected(model):
    """What the server should answer: every document (top_n above their count), best first, sigmoid scores."""
    return model.rank(QUERY, DOCS)


def test_langchain_and_llamaindex_cohere_rerankers_work_unchanged(server, model):
    from langchain_cohere import CohereRerank as LangChainCohere
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaIndexCohere

    want = expected(model)
    kept = LangChainCohere(cohere_api_key="unused", base_url=server.base, model="rerank-english-v3.0",
                           top_n=5).compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    assert [d.page_content for d in kept] == [DOCS[r["corpus_id"]] for r in want]  # LangChain's default top_n is 3
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([r["score"] for r in want], abs=1e-3)
    nodes = LlamaIndexCohere(api_key="unused", base_url=server.base, top_n=5).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCS], query_str=QUERY)
    assert [n.node.get_content() for n in nodes] == [DOCS[r["corpus_id"]] for r in want]
    assert [n.score for n in nodes] == pytest.approx([r["score"] for r in want], abs=1e-3)


@pytest.mark.parametrize("provider, path", [("cohere", "/v1/rerank"), ("text-embeddings-inference", "/rerank")])
def test_rerankers_api_ranker_works_unchanged(server, model, provider, path):
    from rerankers import Reranker

    ranker = Reranker("cascade", model_type="APIRanker", api_provider=provider, api_key="unused", url=server.base + path,
                      verbose=0)
    results = ranker.rank(QUERY, DOCS).results
    want = expected(model)
    assert [r.document.text for r in results] == [DOCS[r["corpus_id"]] for r in want]
    assert [r.score for r in results] == pytest.approx([r["score"] for r in want], abs=1e-3)
