"""What a request may hold: the bodies of /rerank, /search and /context and their checks. A bad field is
answered 422 naming it, never a 5xx: lone surrogates, empty or overlong queries, documents and ids past their
limits, and any search setting `SearchSettings` refuses."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from cascade.pipeline import MAX_QUERY_CHARS
from cascade.settings import CONTEXT_TOP, NAMES, SearchSettings


def _unicode(text: str) -> str:
    """JSON's \\ud800 escapes decode to lone surrogates, which no tokenizer takes: refuse them by name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: a lone surrogate {text[e.start]!r} at character {e.start}") from None
    return text


def _non_empty(query: str) -> str:
    if not query.strip():
        raise ValueError("query is empty")
    if len(query) > MAX_QUERY_CHARS:  # the engine's limit, answered as a 422 naming the field
        raise ValueError(f"{len(query)} characters long; at most {MAX_QUERY_CHARS}")
    return query


MAX_DOCUMENT_CHARS = 1_000_000  # a document far past what any reranker reads (texts are cut before tokenising)
MAX_ID_CHARS = 1_000


def _at_most(limit: int):
    def check(text: str) -> str:
        if len(text) > limit:
            raise ValueError(f"{len(text)} characters long; at most {limit}")
        return text

    return AfterValidator(check)


Text = Annotated[str, AfterValidator(_unicode), _at_most(MAX_DOCUMENT_CHARS)]  # every document a client sends
Query = Annotated[str, AfterValidator(_unicode), AfterValidator(_non_empty)]  # every route that takes a query


class Document(BaseModel):
    id: Annotated[str, AfterValidator(_unicode), _at_most(MAX_ID_CHARS)] | None = None
    text: Text


class RerankRequest(BaseModel):
    """Cohere/Jina rerank request (`documents`), or TEI's (`texts`, answered in TEI's list shape). Their
    `model` and TEI's `truncate` are accepted and ignored: this server runs one model and always truncates."""

    model_config = ConfigDict(extra="ignore")
    query: Query
    documents: list[Text | Document] | None = Field(None, min_length=1)
    texts: list[Text] | None = Field(None, min_length=1)
    top_n: int | None = None
    return_documents: bool = False
    raw_scores: bool = False  # the model's logits instead of sigmoid scores in [0, 1] (TEI's flag; Cohere's scale)
    return_text: bool = False  # TEI: each result carries its text


def settings_fields(**defaults) -> dict:
    """Request fields for every search setting, typed, defaulted and documented as `SearchSettings` has them;
    their checks are its own (a bad value is a SettingError, answered 422 naming the field)."""
    hints = get_type_hints(SearchSettings)
    return {f.name: (hints[f.name], Field(defaults.get(f.name, f.default), description=f.metadata["help"]))
            for f in fields(SearchSettings)}


SearchRequest = create_model("SearchRequest", __config__=ConfigDict(extra="forbid"), query=(Query, ...),
                             **settings_fields())
ContextRequest = create_model("ContextRequest", __config__=ConfigDict(extra="forbid"), query=(Query, ...),
                              max_tokens=(int, Field(2000, ge=1, le=1_000_000)), **settings_fields(top=CONTEXT_TOP))


def search_settings(body: BaseModel) -> SearchSettings:
    return SearchSettings(**{name: getattr(body, name) for name in NAMES})


UNION_MISMATCHES = ("string_type", "model_type", "model_attributes_type")  # "this union branch does not fit"
UNION_BRANCHES = ("str", "Document")  # branch names pydantic puts in an error's location
