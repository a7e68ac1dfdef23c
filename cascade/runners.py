"""Where shard work runs: in this process (`LocalRunner`) or on a Ray cluster (`RayRunner`).

Index building is a map over shards (count terms + encode, then score BM25 + build the ANN), and
batch search (cascade/distributed.py) is a map over queries; both take a runner. Ray is an existing engine that runs the same
code on a laptop (`ray.init()` starts a local cluster) and on many nodes (`address="auto"` or
`ray://head:10001`); its workers must see the index directory at the same path (a shared filesystem).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from cascade.errors import CascadeError


class Runner:
    in_process = True  # jobs may receive live objects (a loaded encoder) instead of names

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> list:
        raise NotImplementedError


class LocalRunner(Runner):
    def map(self, fn: Callable, jobs: Sequence[tuple]) -> list:
        return [fn(*job) for job in jobs]


class RayRunner(Runner):
    """Each job is one Ray task (`num_cpus` each); results come back in job order."""

    in_process = False

    def __init__(self, address: str | None = None, num_cpus: float = 1):
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                               if k.startswith(("HF_", "CASCADE_"))}})
        self._ray, self.num_cpus = ray, num_cpus

    def map(self, fn: Callable, jobs: Sequence[tuple]) -> list:
        task = self._ray.remote(num_cpus=self.num_cpus)(fn)
        return self._ray.get([task.remote(*job) for job in jobs])


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CascadeError("distributed runs need Ray: pip install 'cascade-retrieval[distributed]'") from None
    return ray


_ENCODERS: dict[tuple, Any] = {}


def worker_encoder(encoder):
    """The encoder itself, or (on a worker, given `Encoder.settled()`) one loaded once per worker process."""
    if not isinstance(encoder, dict):
        return encoder
    key = tuple(sorted(encoder.items()))
    if key not in _ENCODERS:
        from cascade.models.bi_encoder import Encoder

        _ENCODERS[key] = Encoder(**encoder)
    return _ENCODERS[key]
