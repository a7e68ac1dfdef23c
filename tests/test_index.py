import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cascade import Cascade, CascadeError, load_documents
from cascade.cli import main
from cascade.index import FORMAT_VERSION, Index
from cascade.models.hub import BUNDLED_RERANKER
from tests.conftest import DOCS, assert_within_bound, write_jsonl


def build(src, out, *extra):
    assert main(["index", str(src), "--out", str(out), "--quiet", *extra]) == 0
    return Index.load(out)


def test_index_from_folder_jsonl_and_beir(tmp_path, scifact):
    folder = tmp_path / "notes"
    folder.mkdir()
    for d in DOCS:
        (folder / f"{d['id']}.md").write_text(d["text"], encoding="utf-8")
    for src in (folder, write_jsonl(tmp_path / "docs.jsonl", DOCS)):
        index = build(src, tmp_path / f"idx-{src.name}")
        assert index.manifest["counts"] == {"documents": len(DOCS), "passages": len(DOCS)}
    # a BEIR folder: a 300-document slice of real SciFact, written in BEIR layout
    beir = tmp_path / "beir"
    beir.mkdir()
    docs = load_documents(scifact)[:300]
    write_jsonl(beir / "corpus.jsonl", [{"_id": d.id, "title": d.title, "text": d.text} for d in docs])
    index = build(beir, tmp_path / "idx-beir", "--passage-words", "120", "--overlap", "20")
    assert index.manifest["counts"]["documents"] == 300
    assert index.manifest["counts"]["passages"] > 300  # long abstracts were split
    assert {p.doc_id for p in index.passages} == {d.id for d in docs}
    assert index.dense.size == index.bm25.size == len(index.passages)


def test_manifest_records_format_models_counts_settings(small_index):
    m = json.loads((small_index / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION
    assert m["encoder"] == {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384, "max_length": 256,
                            "pooling": "mean", "tokenizer": "26b3cbffb707e732"}  # passages' stored ids are its
    assert m["settings"] == {"passage_words": 80, "overlap": 16, "k1": 1.2, "b": 0.75, "shards": 1, "ann": "auto",
                             "ann_params": {}}
    assert m["shards"] == [{"dir": "shard-000", "passages": 6}] and m["ann"] == [{"kind": "flat"}]
    assert m["bm25"]["stemmer"] == "english" and m["bm25"]["stopwords"] == "en"
    assert m["counts"] == {"documents": len(DOCS), "passages": len(DOCS)}
    data = small_index / m["data"]
    assert all((data / name).stat().st_size == size for name, size in m["files"].items())


def test_dense_vectors_are_normalised_and_match_a_fresh_encoding(small_index):
    cascade = Cascade.load(small_index, reranker=None)
    vectors = cascade.index.dense.vectors()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    fresh = cascade.encoder.encode([p.content for p in cascade.index.passages])
    np.testing.assert_allclose((vectors * fresh).sum(1), 1.0, atol=1e-3)


def test_an_encoder_that_gives_nan_is_refused_before_anything_is_stored(tmp_path):
    import torch

    from cascade.models.bi_encoder import Encoder
    from cascade.models.hub import DEFAULT_ENCODER

    broken = Encoder(DEFAULT_ENCODER)
    with torch.no_grad():
        broken.model.embeddings.word_embeddings.weight[:] = float("nan")  # weights gone bad (a bad cast, a bad file)
    with pytest.raises(CascadeError, match="gave NaN or infinite vectors for 6 of 6 texts"):
        Cascade.build(DOCS, tmp_path / "idx", encoder=broken, reranker=None)
    assert not (tmp_path / "idx").exists()


def test_encoding_progress_moves_per_batch_and_bars_stay_off_the_log(tmp_path, capfd):
    """The index's bar is told after every batch (it sat at 0/7727 for 18 minutes when told per 4,096
    passages), and a command whose stderr is not a terminal draws no bar at all."""
    from cascade.models.bi_encoder import Encoder
    from cascade.models.hub import DEFAULT_ENCODER

    told = []
    Encoder(DEFAULT_ENCODER).encode([f"passage number {k}" for k in range(10)], batch_size=4, on_batch=told.append)
    assert sum(told) == 10 and len(told) == 3
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    assert main(["index", str(tmp_path / "docs.jsonl"), "--out", str(tmp_path / "idx")]) == 0  # stderr: a pipe
    assert "encoding" not in capfd.readouterr().err


def test_incremental_update_reencodes_only_changed_documents(tmp_path, capsys):
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    build(src, tmp_path / "idx")
    first_data = json.loads((tmp_path / "idx" / "manifest.json").read_text())["data"]
    capsys.readouterr()

    changed = [d for d in DOCS if d["id"] != "s-1"]  # remove one
    changed[0] = {**changed[0], "text": "Token buckets let short bursts through while capping the average rate."}
    changed.append({"id": "new-1", "title": "Bloom filters", "text": "A Bloom filter answers maybe or definitely not."})
    write_jsonl(src, changed)
    index = build(src, tmp_path / "idx")
    out = capsys.readouterr().out
    assert "encoded 2, reused 4, removed 2" in out  # one edited + one added; one deleted + the edit's old text
    ids = {p.id for p in index.passages}
    assert "new-1" in ids and "s-1" not in ids
    # old data folder cleaned up; exactly one live data folder
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("data-")) == [index.manifest["data"]]
    assert index.manifest["data"] != first_data
    hit = Cascade.load(tmp_path / "idx", reranker=None).search("Bloom filter maybe", top=1).hits[0]
    assert hit.id == "new-1"


def test_unchanged_rerun_encodes_nothing(tmp_path, capsys):
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    build(src, tmp_path / "idx")
    build(src, tmp_path / "idx")
    assert f"encoded 0, reused {len(DOCS)}, removed 0" in capsys.readouterr().out


def test_refuses_to_write_into_a_non_index_folder(tmp_path, docs_jsonl, capsys):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("do not touch")
    assert main(["index", str(docs_jsonl), "--out", str(tmp_path / "precious"), "--quiet"]) == 2
    assert "not empty and not a Cascade index" in capsys.readouterr().err
    assert os.listdir(tmp_path / "precious") == ["thesis.tex"]


@pytest.fixture
def copy_of_index(small_index, tmp_path):
    import shutil

    return shutil.copytree(small_index, tmp_path / "copy")


VECTORS = "shard-000/dense/vectors.npy"


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, m):
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json is corrupted"),
    (lambda p: _write_manifest(p, {**_manifest(p), "format_version": 99}), "format version 99 is not supported"),
    (lambda p: _write_manifest(p, {k: v for k, v in _manifest(p).items() if k != "counts"}), "'counts' is missing"),
    (lambda p: _write_manifest(p, {**_manifest(p), "counts": {"documents": 6, "passages": 7}}),
     "manifest says 7 passages"),
    (lambda p: (p / _manifest(p)["data"] / VECTORS).unlink(), "missing .*vectors.npy"),
    (lambda p: (p / _manifest(p)["data"] / VECTORS).write_bytes(b"garbage"), "vectors.npy has 7 bytes"),
    (lambda p: _write_manifest(p, {**_manifest(p), "files": {}}) or (p / _manifest(p)["data"] / VECTORS).write_bytes(
        b"garbage"), "is damaged: ValueError"),
    (lambda p: (p / "manifest.json").unlink(), "is not a Cascade index"),
])
def test_damaged_index_gives_one_clear_error(copy_of_index, damage, message, capsys):
    damage(copy_of_index)
    with pytest.raises(CascadeError, match=message):
        Index.load(copy_of_index)
    assert main(["search", str(copy_of_index), "rate limiting"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cascade: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _flip_one_byte(path, offset: int = -1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # same size: sizes and counts cannot see it
    path.write_bytes(bytes(data))


def test_checksums_catch_same_size_damage_and_a_rebuild_starts_over(copy_of_index, tmp_path, docs_jsonl, capsys):
    assert main(["verify", str(copy_of_index)]) == 0
    assert "every file matches its checksum" in capsys.readouterr().out
    before = Cascade.load(copy_of_index, reranker=None).search("rate limiting", rerank_depth=0)
    _flip_one_byte(copy_of_index / _manifest(copy_of_index)["data"] / VECTORS)
    Index.load(copy_of_index, verify=False)  # sizes and counts still agree
    with pytest.raises(CascadeError, match=f"{VECTORS} changed since it was built .checksum mismatch in a sampled"):
        Index.load(copy_of_index)  # every load checks a sample: a small file is hashed whole
    assert main(["verify", str(copy_of_index)]) == 2
    err = capsys.readouterr().err
    assert f"{VECTORS} changed since it was built" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CascadeError, match="checksum mismatch"):
        Cascade.load(copy_of_index, reranker=None, verify=True)
    # an update over the damaged index must not reuse its vectors: it rebuilds from scratch
    rebuilt = Cascade.build(load_documents(docs_jsonl), copy_of_index, reranker=None)
    assert rebuilt.build_stats.reused == 0
    after = rebuilt.search("rate limiting", rerank_depth=0)
    assert [h.id for h in after.hits] == [h.id for h in before.hits]
    assert main(["verify", str(copy_of_index)]) == 0


CORRUPTIONS = {  # what a bad copy, a failing disk or an edit does to one file
    "deleted": lambda b: None,
    "truncated": lambda b: b[: len(b) // 2],
    "zeroed": lambda b: bytes(len(b)),  # same size
    "one byte flipped": lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]),  # same size: a NaN vector, an edited passage
}


def test_every_corruption_of_every_index_file_is_refused_by_name_never_answered_wrong(copy_of_index):
    """Each of the 12 files x 4 corruptions (the stress test's 36, and the stored token ids' 12): loading and
    searching either refuses with one line naming the file, or answers exactly as the intact index does.
    Same-size damage used to answer wrong with exit 0; every load now checks a sample (the whole of a small
    file) against its checksum."""
    from cascade.index import verify_checksums

    data = copy_of_index / _manifest(copy_of_index)["data"]
    names = sorted(_manifest(copy_of_index)["files"])
    assert len(names) == 12 and any("dense" in n for n in names) and any("bm25" in n for n in names)
    assert sum("token" in n for n in names) == 3  # passages' stored token ids, offsets and counts
    intact = Cascade.load(copy_of_index, reranker=None)

    def answer(engine):
        return [(h.id, round(h.score, 6)) for q in ("rate limiting", "disk failure") for h in
                engine.search(q, rerank_depth=0, top=5).hits]

    expected, refused = answer(intact), []
    for name in names:
        original = (data / name).read_bytes()
        for kind, corrupt in CORRUPTIONS.items():
            damaged = corrupt(original)
            if damaged is None:
                (data / name).unlink()
            else:
                (data / name).write_bytes(damaged)
            try:
                if damaged is not None and len(damaged) == len(original) and damaged != original:
                    with pytest.raises(CascadeError, match=f"{name} changed since it was built"):
                        verify_checksums(copy_of_index)
                assert answer(Cascade.load(copy_of_index, reranker=None)) == expected, \
                    f"{kind} {name}: answered wrong"
            except CascadeError as e:
                assert name.split("/")[-1] in str(e) and "\n" not in str(e), f"{kind} {name}: {e}"
                refused.append((name, kind))
            (data / name).write_bytes(original)
    assert len(refused) == 48  # all of them, at load: small files are hashed whole every time
    assert answer(Cascade.load(copy_of_index, reranker=None)) == expected


def test_an_index_without_checksums_says_so(copy_of_index, capsys):
    _write_manifest(copy_of_index, {k: v for k, v in _manifest(copy_of_index).items() if k != "sha256"})
    Cascade.load(copy_of_index, reranker=None, verify=True)  # old indexes still load
    assert main(["verify", str(copy_of_index)]) == 2
    assert "has no checksums" in capsys.readouterr().err


def test_files_rewritten_in_place_are_noticed_but_atomic_replacement_is_not(copy_of_index):
    from cascade.fileio import Stamps

    index = Index.load(copy_of_index)
    stamps = Stamps(index.data, index.manifest["files"])  # what a server takes of the index it serves
    assert stamps.changed() == []
    data = copy_of_index / _manifest(copy_of_index)["data"]
    passages = next(n for n in _manifest(copy_of_index)["files"] if n.endswith(".jsonl") or "passages" in n)
    (data / passages).replace(data / "moved-away")  # what a re-index does to the old files: the inode lives on
    (data / passages).write_bytes((data / "moved-away").read_bytes())
    assert stamps.changed() == []
    with open(data / VECTORS, "r+b") as fh:  # cp over the file: same inode, new bytes
        fh.truncate(0)
    assert stamps.changed() == [VECTORS]


def test_unknown_index_dir(tmp_path, capsys):
    assert main(["search", str(tmp_path / "nowhere"), "q"]) == 2
    assert "index not found" in capsys.readouterr().err


def test_killed_indexing_leaves_the_previous_index_intact(tmp_path, scifact):
    """SIGKILL a real `cascade index` run at the moment it starts writing; the index must stay loadable."""
    docs = load_documents(scifact)
    old = write_jsonl(tmp_path / "old.jsonl", [{"_id": d.id, "text": d.text} for d in docs[:40]])
    new = write_jsonl(tmp_path / "new.jsonl", [{"_id": d.id, "text": d.text} for d in docs[40:640]])
    out = tmp_path / "idx"
    build(old, out)
    old_manifest = (out / "manifest.json").read_text()
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "index", str(new), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sum(1 for p in out.iterdir() if p.name.startswith("data-")) > 1:  # a new data folder is being written
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = Index.load(out)  # whatever moment we hit, the manifest points at complete data
    documents = len({p.doc_id for p in index.passages})
    assert documents == (40 if (out / "manifest.json").read_text() == old_manifest else 600)
    assert Cascade.load(out, reranker=None).search("cells", top=3).hits
    build(new, out)  # the next run succeeds and clears the orphan
    assert sum(1 for p in out.iterdir() if p.name.startswith("data-")) == 1


def test_a_second_writer_is_refused_and_a_failed_first_build_leaves_no_folder(tmp_path, scifact, capsys):
    docs = load_documents(scifact)
    src = write_jsonl(tmp_path / "docs.jsonl", [{"_id": d.id, "text": d.text} for d in docs[:600]])
    out = tmp_path / "idx"
    proc = subprocess.Popen([sys.executable, "-m", "cascade.cli", "index", str(src), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not any(out.glob("data-*")):
        time.sleep(0.01)
    assert proc.poll() is None, "the first run ended before the second could start"
    assert main(["index", str(src), "--out", str(out), "--quiet"]) == 2  # while the first one writes
    assert "another `cascade index` is writing" in capsys.readouterr().err
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len(Index.load(out).passages) >= 600  # the first run's work is whole

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": 5}\n')
    assert main(["index", str(bad), "--out", str(tmp_path / "fresh"), "--quiet"]) == 2
    assert not (tmp_path / "fresh").exists()


def test_index_and_verify_speak_json(docs_jsonl, tmp_path, capsys):
    assert main(["index", str(docs_jsonl), "--out", str(tmp_path / "idx"), "--quiet", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert (built["documents"], built["passages"], built["encoded"], built["reused"]) == (6, 6, 6, 0)
    assert built["settings"]["passage_words"] == 80 and built["ann"] == ["flat"]
    assert main(["verify", str(tmp_path / "idx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"index": str(tmp_path / "idx"), "ok": True,
                                                   "bytes": sum(_manifest(tmp_path / "idx")["files"].values())}


def test_a_folder_the_machine_refuses_is_one_clear_line(docs_jsonl, capsys):
    assert main(["index", str(docs_jsonl), "--out", "/dev/null/idx", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cascade: error: Not a directory") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [(["--port", "70000"], "a TCP port is 1..65535"),
                                            (["--max-body-mb", "nan"], "must be a number > 0")])
def test_serve_flags_out_of_range_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *flags])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_load_hashes_a_sample_of_a_large_file_and_verify_every_byte(tmp_path, monkeypatch):
    """Per-block digests: a load hashes a large file's first, last and a few random blocks (cheap at any
    size), `verify` every byte; what each catches follows from that."""
    from cascade import integrity

    monkeypatch.setattr(integrity, "BLOCK", 1024)
    monkeypatch.setattr(integrity, "WHOLE_BELOW", 8 * 1024)
    data = tmp_path / "data-1"
    data.mkdir()
    (data / "big.bin").write_bytes(random.Random(0).randbytes(40 * 1024))  # 40 blocks
    (data / "small.bin").write_bytes(b"x" * 3000)
    files = {"big.bin": 40 * 1024, "small.bin": 3000}
    manifest = {"data": "data-1", "files": files, **integrity.digests(data, files)}
    assert integrity.verify(tmp_path, manifest, full=False) == 8 * 1024 + 3000  # 8 of 40 blocks, all of the small
    assert integrity.verify(tmp_path, manifest, full=True) == 40 * 1024 + 3000
    for offset in (0, 40 * 1024 - 1):  # the first and the last block are always in the sample
        _flip_one_byte(data / "big.bin", offset)
        with pytest.raises(CascadeError, match="big.bin changed since it was built .checksum mismatch in a sampled"):
            integrity.verify(tmp_path, manifest, full=False)
        _flip_one_byte(data / "big.bin", offset)
    _flip_one_byte(data / "small.bin", 1500)
    with pytest.raises(CascadeError, match="small.bin changed"):
        integrity.verify(tmp_path, manifest, full=False)
    _flip_one_byte(data / "small.bin", 1500)
    _flip_one_byte(data / "big.bin", 20 * 1024 + 5)  # a middle block: certain only for the full check
    with pytest.raises(CascadeError, match="big.bin changed since it was built .checksum mismatch.;"):
        integrity.verify(tmp_path, manifest, full=True)


def test_passage_token_ids_are_stored_and_search_reranks_without_tokenising_a_passage(tiny_ce):
    from cascade.rerank.cross_encoder import CrossEncoder

    cascade = Cascade.build(DOCS, reranker=str(tiny_ce))  # the tiny model has the encoder's (MiniLM's) tokenizer
    index, ce = cascade.index, cascade.reranker
    assert ce.tokenizer_fingerprint == index.manifest["encoder"]["tokenizer"] is not None
    stored = index.passage_tokens(range(len(index.passages)), ce.tokenizer_fingerprint)
    for passage, (ids, count) in zip(index.passages, stored):
        assert ids == ce.tokenizer(passage.content, add_special_tokens=False)["input_ids"] and count == len(ids)
    assert index.passage_tokens([0], "another tokenizer") is None
    bundled = CrossEncoder(BUNDLED_RERANKER, backend="torch", warm_up=False)  # what search runs by default
    assert bundled.tokenizer_fingerprint == index.manifest["encoder"]["tokenizer"]

    tokenised = []
    real = ce.pairs.tokenizer

    class Counting:  # the real tokenizer, noting what it is asked to tokenise
        def __call__(self, texts, **kwargs):
            tokenised.extend(texts)
            return real(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(real, name)

    ce.pairs.tokenizer, ce.pairs.cache = Counting(), type(ce.pairs.cache)()
    runs = cascade.run_stages("cache miss", rerank_depth=6, budget_ms=None)
    assert tokenised == ["cache miss"]  # the query only
    fresh = CrossEncoder(str(tiny_ce), backend=ce.backend)  # tokenises every pair itself
    head = runs.heads["rerank"][0]
    expected = fresh.predict([("cache miss", index.passages[int(i)].content) for i in head], raw_scores=True)
    assert_within_bound(runs.raw["rerank"], expected, ce.dtype)  # exact natively; kernels may differ elsewhere
