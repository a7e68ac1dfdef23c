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

from cascade.context import Context, Span, Tokenizer, assemble, window_position
from cascade.documents import Document, metadata_of, unique
from cascade.errors import CascadeError
from cascade.index import MANIFEST, BuildStats, Index, recorded_reranker
from cascade.models.bi_encoder import Encoder
from cascade.models.hub import DEFAULT_ENCODER
from cascade.models.token_encoder import TokenEncoder
from cascade.rerank import budget
from cascade.rerank.base import Reranker
from cascade.rerank.cache import CacheSpec, open_cache
from cascade.rerank.factory import RerankerChoice, load_reranker
from cascade.rerank.llm import LLMReranker
from cascade.results import Hit, SearchResult, StageRuns
from cascade.retrieve.hybrid import fuse
from cascade.runners import Runner
from cascade.settings import CONTEXT_TOP, UNBUDGETED, IndexSettings, SearchSettings
from cascade.stages import STAGES

log = logging.getLogger(__name__)

HIT_STAGES = ("bm25", "dense", "fusion", *STAGES)  # each hit's score and rank at every one of these
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
        return Document(id=str(d.get("id", d.get("_id"))), text=d["text"], title=d.get("title") or "",
                        metadata=metadata_of(d))
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


def choose_reranker(spec: RerankerSpec | str, device: str | None, index: Index) -> RerankerChoice:
    """A given Reranker as it is; a name loads with its window fitted to the index's passages."""
    if spec is None:
        return RerankerChoice(None, "disabled")
    if isinstance(spec, Reranker):
        return RerankerChoice(spec)
    return load_reranker(None if spec == "auto" else spec, device=device, fit=index_pair_tokens(index.manifest))


def index_pair_tokens(manifest: dict) -> int | None:
    """The tokens a pair of this index's passages needs (`IndexSettings.pair_tokens`)."""
    return IndexSettings.merged({}, manifest["settings"]).pair_tokens


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

        Args:
            docs: Documents, {"id", "title"?, "text", ...metadata} dicts, or plain strings, streamed.
            path: the index folder; an existing index is updated, re-encoding only changed passages.
            encoder, reranker: model names or folders (defaults: the bundled MiniLM and cascade-reranker-fast).
            passage_words, overlap, shards, ann, ann_params: `settings.IndexSettings`; None keeps the
                existing index's value, else the default.
            late_interaction: also store token vectors, from this model (True: the bundled bi-encoder);
                None keeps what the existing index has, False drops them.
            runner: where shard work runs (cascade/runners.py; default this process).

        Returns:
            The engine over the new index (`build_stats`: documents, passages, encoded, reused, removed).

        Examples:
            >>> engine = Cascade.build(load_documents("./notes"), "./idx")
            >>> engine = Cascade.build(["The Moon raises tides.", "Caches cut latency."])  # a temporary index
        """
        documents = as_documents(docs)
        previous = None
        if path is not None and (Path(path) / MANIFEST).exists():
            try:
                previous = Index.load(path, verify=True)  # damaged vectors must not be reused
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
        cascade = cls(index, encoder, choose_reranker(reranker, device, index), cache=cache)
        cascade._late_encoder = late
        cascade.build_stats = stats
        return cascade

    @classmethod
    def load(cls, path: str | Path, *, reranker: RerankerSpec = "auto", device: str | None = None,
             cache: CacheSpec = "memory", llm: LLMReranker | None = None, verify: bool | str = "sample") -> "Cascade":
        """Open a saved index (memory-mapped: fast at any size).

        Args:
            path: the index folder `build` or `cascade index` wrote.
            reranker: a model name or folder, a `Reranker`, None for none; "auto" follows the choice
                `cascade adapt` recorded in the index, else the bundled model. A name loads with its token
                window fitted to the index's passages (`IndexSettings.pair_tokens`); a `Reranker` is used as is.
            cache: "memory" (in-process LRU), "none", or a redis:// URL to share scores between processes.
            llm: an `LLMReranker` for the optional last stage.
            verify: check the index's files against their checksums first: "sample" (small files whole, a
                few blocks of large ones), True every byte (a server, at start), False none.

        Returns:
            The engine; `search`, `context` and `run_stages` take a query.

        Examples:
            >>> engine = Cascade.load("./idx", cache="redis://localhost:6379/0")
        """
        index = Index.load(path, verify=verify)
        recorded = recorded_reranker(Path(path)) if reranker == "auto" else None
        if recorded is not None:
            reranker = recorded or None
        choice = choose_reranker(reranker, device, index)
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
        stage_lists |= {name: head for name, head in run.heads.items() if head is not None}
        lookup = {name: {int(i): (float(s), r) for r, (i, s) in enumerate(zip(*lst), 1)}
                  for name, lst in stage_lists.items()}
        raw = {name: dict(zip(run.heads[name][0].tolist(), scores.tolist())) for name, scores in run.raw.items()}
        hits = []
        for rank, i in enumerate(run.order[: settings.top], 1):
            seen = {name: lookup[name].get(int(i)) if name in lookup else None for name in HIT_STAGES}
            last = next(name for name in reversed(HIT_STAGES[2:]) if seen[name])  # the last stage that ranked it
            p = self.index.passages[int(i)]
            hits.append(Hit(id=p.id, doc_id=p.doc_id, title=p.title, text=p.text, score=seen[last][0], rank=rank,
                            stage_scores={k: v[0] if v else None for k, v in seen.items()},
                            stage_ranks={k: v[1] if v else None for k, v in seen.items()}, metadata=p.metadata,
                            model_scores={name: s[int(i)] for name, s in raw.items() if int(i) in s}))
        reasons = [f"{name}: {status['reason']}" for name, status in run.statuses.items() if status.get("degraded")]
        return SearchResult(query=query.strip(), hits=hits, timings_ms=run.timings_ms, rerank=run.statuses["rerank"],
                            degraded=bool(reasons), llm=run.statuses.get("llm"), degraded_reason="; ".join(reasons))

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
        chain = [stage for stage in STAGES.values() if stage.always or getattr(s, stage.depth)]
        for stage in chain:
            stage.check(self)  # before any work: a stage this engine cannot run is an error, not a silent skip
        query = query.strip()
        depth = max(s.retrieve, first_stage_depth)
        t = [time.perf_counter()]
        deadline = budget.now() + s.budget_ms / 1000 if s.budget_ms is not None else None
        bm25 = self.index.bm25.search(query, depth)
        t.append(time.perf_counter())
        query_vector = self.encoder.encode_query(query)
        dense = self.index.dense.search(query_vector, depth)
        t.append(time.perf_counter())
        fused = fuse(s.fusion, (bm25[0][:s.retrieve], bm25[1][:s.retrieve]),
                     (dense[0][:s.retrieve], dense[1][:s.retrieve]), limit=s.retrieve, alpha=s.alpha)
        t.append(time.perf_counter())
        order, heads, statuses, raw = fused[0], {}, {}, {}
        for stage in chain:
            budget.check_gone()  # a server's client that left is not served further (each stage checks inside too)
            outcome = stage.reorder(self, query, order, s, deadline)
            order, heads[stage.name] = outcome.order, outcome.head
            if outcome.status is not None:
                statuses[stage.name] = outcome.status
            if outcome.raw is not None:
                raw[stage.name] = outcome.raw
            t.append(time.perf_counter())
        names = ["bm25", "dense", "fusion", *(stage.name for stage in chain)]
        timings = {name: (b - a) * 1000 for name, a, b in zip(names, t, t[1:])}
        timings["total"] = (t[-1] - t[0]) * 1000
        return StageRuns(bm25=bm25, dense=dense, fusion=fused, order=order, timings_ms=timings, heads=heads,
                         statuses=statuses, raw=raw, query_vector=query_vector)
