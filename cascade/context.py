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

        from cascade.inference import quiet_transformers
        from cascade.models import resolve

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
    """Near-duplicates removed, then one list per document (documents by best rank, windows in order)."""
    kept: list[tuple[Span, set]] = []
    dropped = []
    for span in spans:
        sh = shingles(span.text)
        twin = next((k for k, ksh in kept if jaccard(sh, ksh) >= dedupe), None)
        if twin is not None:
            dropped.append({"id": span.id, "reason": f"near-duplicate of {twin.id}"})
        else:
            kept.append((span, sh))
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
    """Pack `spans` (best first) into a numbered context of at most `max_tokens` tokens."""
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise CascadeError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not 0 < dedupe <= 1:
        raise CascadeError(f"dedupe must be in (0, 1], got {dedupe}")
    documents, dropped = group(spans, dedupe)
    sources: list[Source] = []
    blocks: list[str] = []
    for n, doc in enumerate(documents):
        number, title, text = len(sources) + 1, doc[0].title, join_windows(doc)
        ids = [s.id for s in doc]
        if tokenizer.count("\n\n".join([*blocks, render(number, title, text)])) <= max_tokens:
            blocks.append(render(number, title, text))
            sources.append(Source(number, doc[0].doc_id, title, ids, text))
            continue
        cut = _cut_to_fit(blocks, number, title, text, max_tokens, tokenizer)
        if cut is not None:
            blocks.append(render(number, title, cut))
            sources.append(Source(number, doc[0].doc_id, title, ids, cut, truncated=True))
        dropped += [{"id": s.id, "reason": "over the token budget"} for d in documents[n + (cut is not None):]
                    for s in d]
        break
    text = "\n\n".join(blocks)
    return Context(query=query, text=text, sources=sources, tokens=tokenizer.count(text), max_tokens=max_tokens,
                   tokenizer=tokenizer.name, dropped=dropped)


def _cut_to_fit(blocks: list[str], number: int, title: str, text: str, max_tokens: int,
                tokenizer: Tokenizer) -> str | None:
    """`text` cut so the context with it fits, or None if fewer than MIN_TRUNCATED_TOKENS of it would."""
    room = max_tokens - tokenizer.count("\n\n".join([*blocks, render(number, title, "")]))
    while room >= MIN_TRUNCATED_TOKENS:
        cut = tokenizer.cut(text, room).rstrip() + " ..."
        if tokenizer.count("\n\n".join([*blocks, render(number, title, cut)])) <= max_tokens:
            return cut
        room -= 2  # token merges across the cut: back off and retry
    return None
