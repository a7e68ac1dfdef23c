"""Context for the LLM: the final passages packed into one prompt-ready block under a token budget.

Search results are not a prompt yet: overlapping windows of one document repeat each other, mirrored
documents repeat whole passages, and a budget counted in words overflows the model's window. Packing:

1. near-identical passages (word 3-shingle Jaccard >= `dedupe`) are dropped, keeping the better-ranked;
2. passages of one document are grouped at that document's best rank, in document order, and adjacent
   windows are merged with their overlap removed;
3. each document becomes one numbered source `[n] title` whose number maps back to its document id;
4. sources are added best first while the whole text fits `max_tokens` in the tokenizer the user names;
   the first one that does not fit is cut at a token boundary, and the rest are listed as dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cascade.errors import CascadeError

DEDUPE = 0.8
MIN_TRUNCATED_TOKENS = 24  # a cut source shorter than this is noise; drop it instead
TokenCounter = Callable[[str], int]


@dataclass
class Source:
    number: int
    doc_id: str
    title: str
    passage_ids: list[str]
    text: str
    truncated: bool = False


@dataclass
class Context:
    query: str
    text: str  # the block to put in the prompt: "[1] title\ntext\n\n[2] ..."
    sources: list[Source]
    tokens: int
    max_tokens: int
    tokenizer: str
    dropped: list[dict] = field(default_factory=list)  # {"id", "reason"}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Span:
    """One retrieved passage: where it sits in its document (`position`: window number, 0 when whole)."""

    id: str
    doc_id: str
    title: str
    text: str
    position: int


class Tokenizer:
    """Counts and cuts text in a Hugging Face tokenizer's tokens (the user's LLM's, ideally)."""

    def __init__(self, name: str):
        import transformers

        from cascade.models.hub import resolve
        from cascade.models.runtime import quiet_transformers

        quiet_transformers()
        path = Path(name).expanduser()
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(str(path) if path.is_dir() else resolve(name))
        except (OSError, ValueError) as e:
            raise CascadeError(f"could not load tokenizer {name!r}: {str(e).splitlines()[0]}") from None
        self.name = name

    def count(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def cut(self, text: str, tokens: int) -> str:
        """The longest prefix of `text` that is at most `tokens` tokens, cut between tokens."""
        if tokens <= 0:
            return ""
        offsets = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]


def window_position(passage_id: str, doc_id: str) -> int:
    """k for a passage `doc#k` cut from `doc` (cascade.documents.chunk's ids); 0 for a whole document."""
    suffix = passage_id[len(doc_id) + 1:] if passage_id.startswith(doc_id + "#") else ""
    return int(suffix) if suffix.isdigit() else 0


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def merge_overlap(left: str, right: str, max_words: int = 200) -> str:
    """`left` + `right` with the longest run of words that ends `left` and starts `right` written once."""
    a, b = left.split(), right.split()
    for k in range(min(len(a), len(b), max_words), 0, -1):
        if a[-k:] == b[:k]:
            return " ".join(a + b[k:])
    return left.rstrip() + " " + right.lstrip()


def group(spans: Sequence[Span], dedupe: float = DEDUPE) -> tuple[list[list[Span]], list[dict]]:
    """Near-duplicates removed, then one list per document (documents by best rank, windows in order).

    Each span is compared only with kept spans it shares a shingle with (an inverted index over shingles),
    so the cost follows the overlap between passages, not the square of their number."""
    kept: list[tuple[Span, int]] = []
    postings: dict[tuple[str, ...], list[int]] = {}
    dropped = []
    for span in spans:
        sh = shingles(span.text)
        shared: dict[int, int] = {}
        for s in sh:
            for k in postings.get(s, ()):
                shared[k] = shared.get(k, 0) + 1
        twin = next((k for k in sorted(shared) if shared[k] / (len(sh) + kept[k][1] - shared[k]) >= dedupe), None)
        if twin is not None:
            dropped.append({"id": span.id, "reason": f"near-duplicate of {kept[twin][0].id}"})
            continue
        for s in sh:
            postings.setdefault(s, []).append(len(kept))
        kept.append((span, len(sh)))
    docs: dict[str, list[Span]] = {}
    for span, _ in kept:
        docs.setdefault(span.doc_id, []).append(span)
    return [sorted(v, key=lambda s: s.position) for v in docs.values()], dropped


def join_windows(spans: Sequence[Span]) -> str:
    """One document's passages in order: adjacent windows merged, gaps marked with an ellipsis."""
    text = spans[0].text
    for prev, cur in zip(spans, spans[1:]):
        text = merge_overlap(text, cur.text) if cur.position == prev.position + 1 else f"{text} [...] {cur.text}"
    return text


def render(number: int, title: str, text: str) -> str:
    return f"[{number}] {title}\n{text}" if title else f"[{number}] {text}"


def assemble(query: str, spans: Sequence[Span], max_tokens: int, tokenizer: Tokenizer,
             dedupe: float = DEDUPE) -> Context:
    """Pack `spans` (best first) into a numbered context of at most `max_tokens` tokens.

    Each source is counted once and the counts added up (quadratic re-counting of the growing text took
    48 s for 400 sources); the whole text is counted exactly at the end, and in the rare case that tokens
    merged across a join so the sum was wrong, the packing is redone counting the whole text each time."""
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise CascadeError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not 0 < dedupe <= 1:
        raise CascadeError(f"dedupe must be in (0, 1], got {dedupe}")
    documents, dropped = group(spans, dedupe)
    for exact in (False, True):
        context = _pack(query, documents, max_tokens, tokenizer, exact)
        if context.tokens <= max_tokens:
            break
    context.dropped = dropped + context.dropped
    return context


def _pack(query: str, documents: list[list[Span]], max_tokens: int, tokenizer: Tokenizer, exact: bool) -> Context:
    sources: list[Source] = []
    blocks: list[str] = []
    dropped: list[dict] = []
    used = 0  # tokens of "\n\n".join(blocks), as counted

    def cost(block: str) -> int:
        """Tokens the context has with `block` added."""
        if exact:
            return tokenizer.count("\n\n".join([*blocks, block]))
        return used + tokenizer.count(f"\n\n{block}" if blocks else block)

    for n, doc in enumerate(documents):
        number, title, text = len(sources) + 1, doc[0].title, join_windows(doc)
        ids = [s.id for s in doc]
        if (total := cost(render(number, title, text))) <= max_tokens:
            blocks.append(render(number, title, text))
            sources.append(Source(number, doc[0].doc_id, title, ids, text))
            used = total
            continue
        cut = _cut_to_fit(cost, number, title, text, max_tokens, tokenizer)
        if cut is not None:
            blocks.append(render(number, title, cut))
            sources.append(Source(number, doc[0].doc_id, title, ids, cut, truncated=True))
        dropped += [{"id": s.id, "reason": "over the token budget"} for d in documents[n + (cut is not None):]
                    for s in d]
        break
    text = "\n\n".join(blocks)
    return Context(query=query, text=text, sources=sources, tokens=tokenizer.count(text), max_tokens=max_tokens,
                   tokenizer=tokenizer.name, dropped=dropped)


def _cut_to_fit(cost: Callable[[str], int], number: int, title: str, text: str, max_tokens: int,
                tokenizer: Tokenizer) -> str | None:
    """`text` cut so the context with it fits, or None if fewer than MIN_TRUNCATED_TOKENS of it would."""
    room = max_tokens - cost(render(number, title, ""))
    while room >= MIN_TRUNCATED_TOKENS:
        cut = tokenizer.cut(text, room).rstrip() + " ..."
        if cost(render(number, title, cut)) <= max_tokens:
            return cut
        room -= 2  # token merges across the cut: back off and retry
    return None
