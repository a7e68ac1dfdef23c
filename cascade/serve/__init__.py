"""The HTTP service (`cascade serve`): needs the `serve` extra (FastAPI, uvicorn, prometheus-client)."""

from __future__ import annotations

from cascade.errors import CascadeError


def require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CascadeError(f"`cascade serve` needs the serve extra ({e.name} is missing): "
                           "pip install 'cascade-retrieval[serve]'") from None
