import numpy as np
import pytest

from cascade import CascadeError
from cascade.retrieve.hybrid import fuse, minmax, rrf, weighted
from cascade.retrieve.topk import top_k


def ranking(ids, scores=None):
    ids = np.asarray(ids, dtype=np.int64)
    return ids, np.asarray(scores if scores is not None else -np.arange(len(ids)), dtype=np.float32)


def test_rrf_matches_the_formula():
    ids, scores = rrf([ranking([1, 2, 3]), ranking([3, 1])], k=60)
    expected = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61}
    assert list(ids) == sorted(expected, key=lambda i: -expected[i])
    np.testing.assert_allclose(scores, [expected[i] for i in ids])


def test_rrf_ties_break_by_lower_index_and_empty_lists_are_fine():
    ids, _ = rrf([ranking([5]), ranking([4])])
    assert list(ids) == [4, 5]
    ids, scores = rrf([ranking([]), ranking([])])
    assert len(ids) == len(scores) == 0
    with pytest.raises(CascadeError):
        rrf([ranking([1])], k=0)


def test_minmax():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax(np.array([7.0, 7.0])), [1.0, 1.0])


def test_weighted_fusion_normalises_then_weights():
    bm25 = ranking([10, 11, 12], [30.0, 20.0, 10.0])
    dense = ranking([12, 13], [0.9, 0.5])
    ids, scores = weighted([bm25, dense], [0.25, 0.75])
    got = dict(zip(ids.tolist(), scores.tolist()))
    assert got == pytest.approx({10: 0.25, 11: 0.125, 12: 0.75, 13: 0.0})
    assert list(ids) == [12, 10, 11, 13]


def test_fuse_limits_and_validates():
    ids, _ = fuse("rrf", ranking([1, 2, 3]), ranking([4, 5]), limit=2)
    assert list(ids) == [1, 4]
    ids, _ = fuse("weighted", ranking([1, 2], [2.0, 1.0]), ranking([2, 1], [0.9, 0.1]), limit=5, alpha=1.0)
    assert list(ids) == [2, 1]
    with pytest.raises(CascadeError, match="unknown fusion"):
        fuse("max", ranking([1]), ranking([1]), limit=1)
    with pytest.raises(CascadeError, match="alpha"):
        fuse("weighted", ranking([1]), ranking([1]), limit=1, alpha=1.5)


def test_top_k_is_sorted_and_stable():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.0], dtype=np.float32)
    idx, s = top_k(scores, 3)
    assert list(idx) == [1, 3, 2] and list(s) == pytest.approx([0.9, 0.9, 0.5])
    assert len(top_k(scores, 0)[0]) == 0 and len(top_k(scores, 99)[0]) == 5


def test_first_stage_products_run_on_one_blas_thread():
    """OpenBLAS threads left spinning after a dense scan starved the model that ran next (a query encoding
    took 96 ms instead of 10 on a 2-core CPU); the scan runs on one thread and the process keeps its setting."""
    from threadpoolctl import threadpool_info

    from cascade.retrieve.blas import one_thread

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before, "NumPy's BLAS is found"
    with one_thread():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
