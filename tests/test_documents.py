import gzip
import json

import pytest

from cascade import CascadeError, Document, load_documents
from cascade.documents import chunk
from tests.conftest import write_jsonl


def test_folder_of_txt_and_md_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha text", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("# Bee\nbeta text", encoding="utf-8")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    (tmp_path / "empty.txt").write_text("   ", encoding="utf-8")
    docs = load_documents(tmp_path)
    assert [(d.id, d.title) for d in docs] == [("a.txt", "a"), ("sub/b.md", "b")]
    assert docs[1].text == "# Bee\nbeta text"


def test_jsonl_accepts_id_or__id_and_optional_title(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "text": "one"}, {"_id": "x", "title": "T", "text": "two"}])
    assert load_documents(path) == [Document("1", "one", ""), Document("x", "two", "T")]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "g", "text": "gzipped"}) + "\n")
    assert load_documents(path) == [Document("g", "gzipped")]


def test_beir_folder_real_scifact(scifact):
    docs = load_documents(scifact)
    assert len(docs) == 5183  # official BEIR count
    assert all(d.id and d.text for d in docs[:100])


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n', "c.jsonl:2: not valid UTF-8"),
    (b'{"id": "a", "text": "ok"}\n{"id": \n', "c.jsonl:2: invalid JSON"),
    (b'{"text": "no id"}\n', "c.jsonl:1: record has no 'id' or '_id'"),
    (b'{"id": "a"}\n', "has no string 'text'"),
    (b'[1, 2]\n', "expected a JSON object"),
    (b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "duplicate document id 'a'"),
    (b'\n\n', "no documents found"),
])
def test_jsonl_errors_name_the_problem(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    with pytest.raises(CascadeError, match=message):
        load_documents(path)


def test_non_utf8_file_in_folder_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"latin-1 caf\xe9")
    with pytest.raises(CascadeError, match=r"bad\.txt: not valid UTF-8"):
        load_documents(tmp_path)


def test_unknown_and_unsupported_sources(tmp_path):
    with pytest.raises(CascadeError, match="source not found"):
        load_documents(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(CascadeError, match="unsupported source"):
        load_documents(tmp_path / "x.csv")


def test_chunk_short_document_keeps_id_and_text():
    doc = Document("d", "  few words  here ", "T")
    [p] = chunk(doc, words=10, overlap=2)
    assert (p.id, p.doc_id, p.text, p.title) == ("d", "d", "few words  here", "T")
    assert p.content == "T few words  here"


def test_chunk_windows_overlap_and_cover_the_end():
    doc = Document("d", " ".join(f"w{i}" for i in range(25)))
    passages = chunk(doc, words=10, overlap=3)
    starts = [int(p.text.split()[0][1:]) for p in passages]
    assert starts == [0, 5, 10, 15]  # evenly spaced full windows, overlap 5 >= 3, last ends at the end
    assert [p.id for p in passages] == ["d#0", "d#1", "d#2", "d#3"]
    assert all(p.doc_id == "d" and len(p.text.split()) == 10 for p in passages)
    assert passages[-1].text.split()[-1] == "w24"


@pytest.mark.parametrize("n, words, overlap", [(11, 10, 0), (200, 50, 10), (1001, 200, 40), (57, 8, 7)])
def test_chunk_covers_every_word_with_the_overlap(n, words, overlap):
    passages = chunk(Document("d", " ".join(f"w{i}" for i in range(n))), words=words, overlap=overlap)
    spans = [[int(t[1:]) for t in p.text.split()] for p in passages]
    assert spans[0][0] == 0 and spans[-1][-1] == n - 1
    assert all(len(s) == words for s in spans)
    assert all(a[-1] - b[0] + 1 >= overlap for a, b in zip(spans, spans[1:]))


def test_chunk_zero_keeps_documents_whole_and_rejects_bad_settings():
    doc = Document("d", " ".join(["w"] * 1000))
    assert len(chunk(doc, words=0, overlap=0)) == 1
    with pytest.raises(CascadeError, match="invalid chunking"):
        chunk(doc, words=10, overlap=10)


def test_digest_changes_with_content_only():
    a, b = [chunk(d, 80, 16)[0] for d in (Document("a", "same text", "t"), Document("b", "same text", "t"))]
    assert a.digest == b.digest
    assert a.digest != chunk(Document("a", "other text", "t"), 80, 16)[0].digest
