"""A read deadline for uvicorn's HTTP/1.1 connections: a request's head and body must arrive within
`--read-timeout-s` of its first byte (or of the connection opening), else the client gets 408 and the
connection is closed.

Why: uvicorn times out only idle keep-alive connections. A client that opens a connection and sends nothing,
or sends its headers a byte a minute (slowloris), holds it for ever, and a few hundred such clients fill
`--max-connections`. This subclasses uvicorn's h11 protocol (uvicorn accepts a protocol class as `http`) and
adds one timer per request; uvicorn's httptools protocol, when installed, is not used by `cascade serve`.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)  # the client's side: nothing more to wait for


def timeout_response(seconds: float) -> bytes:
    """The raw 408, in the server's one error shape; written to the socket because the app may not have the
    request yet."""
    body = json.dumps({"message": f"request not received within {seconds:g} s (--read-timeout-s)"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


def read_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a `seconds` deadline on reading each request."""

    class ReadDeadline(H11Protocol):
        timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self.arm()  # a new request starts (after keep-alive idling, which uvicorn times out itself)
            super().data_received(data)
            if self.conn.their_state in RECEIVED:
                self.disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            pending = self.conn.their_state is h11.SEND_BODY or (self.conn.their_state is h11.IDLE
                                                                and bool(self.conn.trailing_data[0]))
            if pending and not self.transport.is_closing():
                self.arm()  # a pipelined request, part of it already buffered

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def arm(self) -> None:
            if self.timer is None:
                self.timer = self.loop.call_later(seconds, self.expired)

        def disarm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def expired(self) -> None:
            self.timer = None
            if self.transport.is_closing() or self.conn.their_state in RECEIVED:
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(timeout_response(seconds))
            self.transport.close()  # the app, if it had the head, sees the client gone

    return ReadDeadline
