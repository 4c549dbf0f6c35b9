"""The real server (``extauthz.server.serve``) on its own event loop in a thread; ``engine``
is the worker's engine (what decides), once it serves."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import uvloop

from extauthz.config import Settings
from extauthz.engine import Engine
from extauthz.server import serve
from tests.support.ports import wait_for_http


class ServerThread:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            async def started(engine: Engine) -> None:
                self.engine = engine
                self._started.set()

            await serve(self.settings, stop=self._stop, on_started=started)

        try:
            uvloop.run(main())  # as `extauthz serve` runs it
        except BaseException as e:  # noqa: BLE001 - surfaced to the test by start()
            self._error = e
            self._started.set()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(20)
        if self._error is not None:
            raise self._error
        wait_for_http(f"http://127.0.0.1:{self.settings.http_listen[1]}/readyz")
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_listen[1]}"

    def channel(self) -> Any:
        return grpc.insecure_channel(self.target)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
