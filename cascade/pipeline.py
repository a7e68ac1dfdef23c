"""The cascade: BM25 + dense -> fusion -> [late interaction] -> cross-encoder -> [LLM] -> best hits.

Each optional stage reorders the head of the list the one before it produced: late interaction the top
`late_depth`, the cross-encoder the top `rerank_depth` of that, the LLM the top `llm_depth` of that.

Each stage is timed; each hit carries the score and rank it got at every stage, so users can
see what reranking changed.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from cascade.context import Context, Span, Tokenizer, assemble, window_position
from cascade.documents import Document, unique
from cascade.errors import CascadeError
from cascade.index import MANIFEST, BuildStats, Index, recorded_reranker
from cascade.models import DEFAULT_ENCODER
from cascade.rerank import Reranker, RerankerChoice, load_reranker
from cascade.rerank import budget
from cascade.rerank.blend import blended_scores
from cascade.rerank.budget import score_within
from cascade.rerank.cache import CacheSpec, cache_key, open_cache
from cascade.rerank.late_interaction import TokenEncoder
from cascade.rerank.llm import LLMReranker
from cascade.results import Hit, SearchResult, StageRuns
from cascade.retrieve import Encoder, fuse
from cascade.runners import Runner
from cascade.settings import UNBUDGETED, SearchSettings

log = logging.getLogger(__name__)

STAGES = ("bm25", "dense", "fusion", "late", "rerank", "llm")
CONTEXT_TOP = 20  # hits `context` packs from by default: more than a search shows, the token budget cuts
DocLike = Union[Document, dict, str]
RerankerSpec = Union[str, Reranker, None]


def as_documents(docs: Iterable[DocLike]) -> Iterator[Document]:
    """Accept Documents, {"id"|"_id", "title"?, "text"} dicts, or plain strings (ids "0", "1", ...), streamed."""
    return unique(map(_as_document, itertools.count(), docs), "the documents given")


def _as_document(n: int, d: DocLike) -> Document:
    if isinstance(d, Document):
        return d
    if isinstance(d, str):
        return Document(id=str(n), text=d)
    if isinstance(d, dict) and isinstance(d.get("text"), str) and (d.get("id", d.get("_id")) is not None):
        return Document(id=str(d.get("id", d.get("_id"))), text=d["text"], title=d.get("title") or "")
    raise CascadeError(f"document {n} is not a Document, a string, or a dict with 'id' and 'text'")


MAX_QUERY_CHARS = 20_000  # a search query, not a document: past this it is a mistake, and analysing it costs


def check_query(query: object) -> None:
    if not isinstance(query, str) or not query.strip():
        raise CascadeError("query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise CascadeError(f"query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise CascadeError("query is not valid UTF-8") from None


def choose_reranker(spec: RerankerSpec | str, device: str | None) -> RerankerChoice:
    if spec is None:
        return RerankerChoice(None, "disabled")
    if isinstance(spec, Reranker):
        return RerankerChoice(spec)
    return load_reranker(None if spec == "auto" else spec, device=device)


class Cascade:
    """An embedded two-stage search engine over one index. Build it, save it, load it, search it."""

    def __init__(self, index: Index, encoder: Encoder, reranker: RerankerChoice, cache: CacheSpec = "memory",
                 llm: LLMReranker | None = None):
        if encoder.model_id != index.manifest["encoder"]["model"] or encoder.dim != index.dense.dim:
            raise CascadeError(f"encoder {encoder.model_id} (dim {encoder.dim}) does not match the index, "
                               f"built with {index.manifest['encoder']['model']} (dim {index.dense.dim})")
        self.index = index
        self.encoder = encoder
        self.reranker = reranker.reranker
        self.rerank_unavailable = reranker.reason
        self.cache = open_cache(cache)
        self.llm = llm
        self.build_stats: BuildStats | None = None
        self._late_encoder: TokenEncoder | None = None
        self._tokenizers: dict[str, Tokenizer] = {}

    @property
    def late_encoder(self) -> TokenEncoder:
        """The query-side token encoder of the index's late-interaction store (loaded on first use)."""
        info = self.index.manifest.get("late_interaction")
        if self.index.late is None or not info:
            raise CascadeError("this index has no late-interaction vectors; rebuild it with "
                               "`cascade index ... --late-interaction`")
        if self._late_encoder is None and info["model"] == self.encoder.model_id and info["dim"] == self.encoder.dim:
            # the bi-encoder's own weights, unprojected: share them instead of loading a second copy
            self._late_encoder = TokenEncoder.wrap(info["model"], self.encoder.tokenizer, self.encoder.model, None,
                                                   self.encoder.device, doc_max_length=info.get("max_length", 256))
        if self._late_encoder is None:
            self._late_encoder = TokenEncoder(info["model"], device=str(self.encoder.device),
                                              doc_max_length=info.get("max_length", 256))
        return self._late_encoder

    @classmethod
    def build(cls, docs: Iterable[DocLike], path: str | Path | None = None, *, encoder: str | Encoder | None = None,
              reranker: RerankerSpec = "auto", passage_words: int | None = None, overlap: int | None = None,
              device: str | None = None, source: str | None = None, progress: bool = False,
              cache: CacheSpec = "memory", late_interaction: str | bool | None = None,
              late_dtype: str | None = None, shards: int | None = None, ann: str | None = None,
              ann_params: dict | None = None, runner: Runner | None = None) -> "Cascade":
        """Index `docs` into `path` atomically (updating an existing index incrementally; None: a temporary one).

        `late_interaction`: also store token vectors for late interaction, from this model (True: the
        bundled bi-encoder); None keeps what the existing index has, False drops them. `shards`, `ann`
        (auto, flat, hnsw, ivfpq) and `ann_params` as in `Index.build`; None keeps the existing index's.
        `runner`: where shard work runs (cascade/runners.py; default this process).
        """
        documents = as_documents(docs)
        previous = None
        if path is not None and (Path(path) / MANIFEST).exists():
            try:
                previous = Index.load(path)
            except CascadeError as e:
                log.warning("rebuilding from scratch: could not read the existing index (%s)", e)
        if not isinstance(encoder, Encoder):
            name = encoder or (previous.manifest["encoder"]["model"] if previous else DEFAULT_ENCODER)
            encoder = Encoder(name, device=device)
        old_late = (previous.manifest.get("late_interaction") or {}) if previous else {}
        if late_interaction is None:
            late_interaction = old_late.get("model") or False
        late = None
        if late_interaction:
            late = TokenEncoder(DEFAULT_ENCODER if late_interaction is True else late_interaction, device=device)
        index, stats = Index.build(documents, encoder, path, passage_words=passage_words, overlap=overlap,
                                   shards=shards, ann=ann, ann_params=ann_params, previous=previous, source=source,
                                   progress=progress, late=late, late_dtype=late_dtype or old_late.get("dtype", "int8"),
                                   runner=runner)
        cascade = cls(index, encoder, choose_reranker(reranker, device), cache=cache)
        cascade._late_encoder = late
        cascade.build_stats = stats
        return cascade

    @classmethod
    def load(cls, path: str | Path, *, reranker: RerankerSpec = "auto", device: str | None = None,
             cache: CacheSpec = "memory", llm: LLMReranker | None = None) -> "Cascade":
        """Open a saved index. `cache`: "memory" (in-process LRU), "none", or a redis:// URL to share scores.
        `reranker="auto"` follows the choice `cascade adapt` recorded in the index, if any."""
        index = Index.load(path)
        recorded = recorded_reranker(Path(path)) if reranker == "auto" else None
        if recorded is not None:
            reranker = recorded or None
        choice = choose_reranker(reranker, device)
        if recorded == "":
            choice.reason = "disabled: `cascade adapt` found that reranking does not pay on this index"
        return cls(index, Encoder(index.manifest["encoder"]["model"], device=device), choice, cache=cache, llm=llm)

    def search(self, query: str, settings: SearchSettings | None = None, **changes) -> SearchResult:
        """The best `settings.top` hits for `query`: retrieve, fuse, rerank the head, within the budget.

        Args:
            query: the question or keywords (non-empty).
            settings: every knob of the search (`cascade.settings.SearchSettings`; its defaults if None).
            **changes: settings to change for this call, e.g. `rerank_depth=50, budget_ms=None`.

        Returns:
            A `SearchResult`: hits best first, each with its score and rank at every stage, the stages'
            timings, the rerank status and `degraded` when the budget cut reranking short.

        Examples:
            >>> engine.search("why does p99 latency rise under load?", rerank_depth=50, top=5)

        `late_depth` > 0 first reorders that many fused candidates by late interaction (the index must have
        been built with it), and the cross-encoder then reranks the top `rerank_depth` of that order.
        `llm_depth` > 0 finally lets the LLM (`Cascade(llm=...)`) reorder the top `llm_depth`. `budget_ms`
        bounds the whole search: reranking takes the largest depth its cost estimate says fits in what the
        first stage left, and stops early if batches run slow. `blend` orders the reranked head by
        1/(60 + reranker rank) + blend/(60 + first-stage rank) (cascade/rerank/blend.py).
        """
        settings = (settings or SearchSettings()).replace(**changes)
        run = self.run_stages(query, settings)
        stage_lists = {"bm25": run.bm25, "dense": run.dense, "fusion": run.fusion}
        for name in ("late", "rerank", "llm"):
            if getattr(run, name) is not None:
                stage_lists[name] = getattr(run, name)
        lookup = {name: {int(i): (float(s), r) for r, (i, s) in enumerate(zip(*lst), 1)}
                  for name, lst in stage_lists.items()}
        hits = []
        for rank, i in enumerate(run.order[: settings.top], 1):
            seen = {name: lookup[name].get(int(i)) if name in lookup else None for name in STAGES}
            last = next(name for name in ("llm", "rerank", "late", "fusion") if seen[name])
            p = self.index.passages[int(i)]
            hits.append(Hit(id=p.id, doc_id=p.doc_id, title=p.title, text=p.text, score=seen[last][0], rank=rank,
                            stage_scores={k: v[0] if v else None for k, v in seen.items()},
                            stage_ranks={k: v[1] if v else None for k, v in seen.items()}))
        degraded = bool(run.rerank_status.get("degraded")) or bool(run.llm_status and run.llm_status["degraded"])
        return SearchResult(query=query.strip(), hits=hits, timings_ms=run.timings_ms, rerank=run.rerank_status,
                            degraded=degraded, llm=run.llm_status)

    def context(self, query: str, max_tokens: int = 2000, tokenizer: str | None = None,
                settings: SearchSettings | None = None, **changes) -> Context:
        """The search's best passages packed for an LLM prompt (cascade/context.py).

        Args:
            query: the question.
            max_tokens: the hard budget, counted with `tokenizer`.
            tokenizer: the Hugging Face tokenizer of the LLM the context is for (dir or id); default the
                index encoder's.
            settings, **changes: the search, as in `search`; `top` defaults to CONTEXT_TOP (20) here.

        Returns:
            A `Context`: near-duplicates dropped, adjacent windows of a document merged, numbered sources
            mapping back to document ids, `text` within `max_tokens`.

        Examples:
            >>> engine.context("why does p99 rise under load?", max_tokens=1500, tokenizer="./my-llm").text
        """
        name = tokenizer or self.encoder.model_id
        if name not in self._tokenizers:
            self._tokenizers[name] = Tokenizer(name)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise CascadeError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
        result = self.search(query, (settings or SearchSettings(top=CONTEXT_TOP)).replace(**changes))
        spans = [Span(h.id, h.doc_id, h.title, h.text, window_position(h.id, h.doc_id)) for h in result.hits]
        return assemble(result.query, spans, max_tokens, self._tokenizers[name])

    def run_stages(self, query: str, settings: SearchSettings | None = None, first_stage_depth: int = 0,
                   **changes) -> "StageRuns":
        """Every stage's ranking for one query (what `search` shows and `evaluate` scores). With no
        `settings`, the defaults without a latency budget (`UNBUDGETED`), so evaluation numbers are exact.

        BM25 and dense retrieve max(retrieve, first_stage_depth) passages; fusion always uses the top
        `retrieve` of each, so evaluation runs can go deeper without changing the cascade.
        """
        check_query(query)
        s = (settings or UNBUDGETED).replace(**changes)
        retrieve, rerank_depth, late_depth, llm_depth = s.retrieve, s.rerank_depth, s.late_depth, s.llm_depth
        if llm_depth and self.llm is None:
            raise CascadeError("llm_depth > 0 needs an LLM reranker: pass --llm-url and --llm-model "
                               "(Cascade(..., llm=LLMReranker(url, model)))")
        late_encoder = self.late_encoder if late_depth else None
        budget_ms, blend_beta = s.budget_ms, s.blend
        query = query.strip()
        depth = max(retrieve, first_stage_depth)
        t = [time.perf_counter()]
        deadline = budget.now() + budget_ms / 1000 if budget_ms is not None else None
        bm25 = self.index.bm25.search(query, depth)
        t.append(time.perf_counter())
        query_vector = self.encoder.encode_query(query)
        dense = self.index.dense.search(query_vector, depth)
        t.append(time.perf_counter())
        fused = fuse(s.fusion, (bm25[0][:retrieve], bm25[1][:retrieve]), (dense[0][:retrieve], dense[1][:retrieve]),
                     limit=retrieve, alpha=s.alpha)
        t.append(time.perf_counter())
        names = ["bm25", "dense", "fusion"]
        order, late = fused[0], None
        if late_encoder is not None:
            order, late = self._late(late_encoder, query, order, late_depth, blend_beta)
            names.append("late")
            t.append(time.perf_counter())
        order, rerank_scores, status = self._rerank(query, order, rerank_depth, s.batch_size, deadline, blend_beta)
        rerank = (order[: len(rerank_scores)], rerank_scores) if rerank_scores is not None else None
        names.append("rerank")
        t.append(time.perf_counter())
        llm, llm_status = None, None
        if llm_depth:
            order, llm, llm_status = self._llm(query, order, llm_depth)
            names.append("llm")
            t.append(time.perf_counter())
        timings = {name: (b - a) * 1000 for name, a, b in zip(names, t, t[1:])}
        timings["total"] = (t[-1] - t[0]) * 1000
        return StageRuns(bm25=bm25, dense=dense, fusion=fused, rerank=rerank, order=order, timings_ms=timings,
                         rerank_status=status, late=late, llm=llm, llm_status=llm_status,
                         query_vector=query_vector)

    def _late(self, encoder: TokenEncoder, query: str, candidates: np.ndarray, depth: int,
              blend_beta: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """The top `depth` reordered by MaxSim over the stored token vectors, blended with their current ranks."""
        head = candidates[:depth]
        scores = self.index.late.score(encoder.encode([query], query=True)[0], head)
        scores = blended_scores(scores, np.arange(1, len(head) + 1), blend_beta)
        best = np.argsort(-scores, kind="stable")
        return np.concatenate([head[best], candidates[depth:]]), (head[best], scores[best])

    def _llm(self, query: str, candidates: np.ndarray, depth: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict]:
        """The LLM's listwise order of the top `depth` (the previous order on any failure, marked degraded).

        Outside `budget_ms`, which bounds retrieval and reranking: the LLM has its own timeout per call."""
        head = candidates[:depth]
        ranking = self.llm.rerank(query, [self.index.passages[int(i)].content for i in head])
        new_head = head[ranking.order]
        status = {"model": self.llm.model_id, "depth": len(head), "degraded": ranking.degraded,
                  "reason": ranking.reason, "calls": ranking.calls, "tokens": ranking.tokens}
        scores = (len(head) - np.arange(len(head))).astype(np.float32)
        return np.concatenate([new_head, candidates[depth:]]), (new_head, scores), status

    def _rerank(self, query: str, candidates: np.ndarray, depth: int, batch_size: int,
                deadline: float | None, blend_beta: float) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Reorder the first `depth` candidates by reranker score (blended with first-stage rank); the rest
        keep fused order.

        Cached scores are free; the misses are scored in first-stage order until `deadline`. Whatever
        got a score goes on top in (blended) score order, the rest follow in first-stage order.
        """
        if self.reranker is None or depth == 0:
            reason = self.rerank_unavailable if self.reranker is None else "rerank_depth is 0"
            return candidates, None, {"status": "unavailable" if self.reranker is None else "skipped",
                                      "reason": reason, "model": None, "depth": 0, "scored": 0, "cache_hits": 0,
                                      "degraded": False}
        head = candidates[:depth]
        passages = [self.index.passages[int(i)] for i in head]
        use_cache = self.cache is not None
        keys = [cache_key(self.reranker.signature, query, p.digest) for p in passages] if use_cache else []
        cached = self.cache.get_many(keys) if use_cache else {}
        scores = np.full(len(head), np.nan, dtype=np.float32)
        for j, k in enumerate(keys):
            if k in cached:
                scores[j] = cached[k]
        misses = np.flatnonzero(np.isnan(scores))
        planned = len(head) - len(misses)
        if len(misses):
            encoded = self.reranker.encode([(query, passages[j].content) for j in misses])
            fresh, planned_misses = score_within(self.reranker, encoded, batch_size, deadline)
            planned += planned_misses
            scores[misses[: len(fresh)]] = fresh
            if use_cache:
                self.cache.put_many({keys[j]: float(s) for j, s in zip(misses, fresh)})
        done = np.flatnonzero(~np.isnan(scores))
        final = blended_scores(scores[done], done + 1, blend_beta)
        best = np.argsort(-final, kind="stable")
        rest = np.flatnonzero(np.isnan(scores))
        order = np.concatenate([head[done[best]], head[rest], candidates[depth:]])
        degraded = len(done) < len(head)
        return order, final[best], {"status": "degraded" if degraded else "ok", "blend": blend_beta,
                                     "reason": f"latency budget: scored {len(done)} of {len(head)}" if degraded else "",
                                     "model": self.reranker.model_id, "depth": len(head), "planned_depth": planned,
                                     "scored": len(done), "cache_hits": len(cached), "degraded": degraded}
