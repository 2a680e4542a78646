"""The app's streaming endpoint `/stream/ws`: other programs (OBS, bots, DAWs) stream PCM through a voice.

The messages are described in `tools.api.stream_protocol`; `tools.stream_client` is a Python client.
Access follows the Realtime tab: clients on this machine (loopback) only, unless the app was started
with `--realtime-remote`; when the app has a login (`--auth user:password`) a stream needs the same
user and password, sent as HTTP Basic credentials in the handshake (`Authorization: Basic ...`) or as
"user" and "password" in the start message (browsers cannot set handshake headers). A refused or
failed stream gets `{"error": "..."}` and a close code: 1008 (refused or a bad request), 1009 (a
message over the size limit), 1011 (the conversion failed), 1013 (too many streams: retry later).
Each connection's conversion runs in a worker thread, so a slow stream never stalls the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

from infer_pack.errors import RVCError, UserInputError
from tools.api.stream_protocol import (
    CREDENTIAL_FIELDS,
    MAX_STREAMS,
    MessageTooBigError,
    PcmStream,
    open_pcm_stream,
    parse_start,
    read_json,
)
from tools.ui_realtime import realtime_allowed

if TYPE_CHECKING:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from tools.web import AppContext

STREAM_PATH = "/stream/ws"
START_TIMEOUT_S = 30.0  # a client that connects and never sends its start message is closed after this
POLICY, TOO_BIG, FAILED, BUSY = 1008, 1009, 1011, 1013
LOG = logging.getLogger(__name__)


class StreamClosed(Exception):
    """Ends a connection with `{"error": message}` and the close `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header, None when absent or not Basic."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class StreamEndpoint:
    """The WebSocket route of one app: its access rule, its stream limit, one stream per connection."""

    def __init__(self, ctx: AppContext, auth: tuple[str, str] | None, max_streams: int = MAX_STREAMS) -> None:
        self.ctx = ctx
        self.auth = auth
        self.max_streams = max_streams
        self.open_streams = 0  # changed only on the server's event loop

    def route(self) -> WebSocketRoute:
        from starlette.routing import WebSocketRoute

        return WebSocketRoute(STREAM_PATH, self.handle)

    def _check_login(self, given: tuple[str, str] | None) -> None:
        if self.auth is None:
            return
        if given is None:
            raise StreamClosed(POLICY, "this app requires a login: send HTTP Basic credentials in the handshake "
                                       '(Authorization header) or "user" and "password" in the start message')  # fmt: skip
        user_ok = hmac.compare_digest(given[0].encode(), self.auth[0].encode())
        password_ok = hmac.compare_digest(given[1].encode(), self.auth[1].encode())
        if not (user_ok and password_ok):
            raise StreamClosed(POLICY, "wrong user or password (the app's --auth login)")

    async def handle(self, websocket: WebSocket) -> None:
        from starlette.websockets import WebSocketDisconnect

        await websocket.accept()
        try:
            if not realtime_allowed(self.ctx, websocket):  # type: ignore[arg-type]  # has .client.host as gr.Request
                raise StreamClosed(POLICY, "streams are served to this machine (loopback) only; start the app with "
                                           "--realtime-remote (and --auth) to serve other machines")  # fmt: skip
            if self.open_streams >= self.max_streams:
                raise StreamClosed(BUSY, f"{self.max_streams} streams are open already (the limit); close one and retry")
            self.open_streams += 1
            try:
                await self._serve(websocket)
            finally:
                self.open_streams -= 1
        except StreamClosed as closed:
            await _close(websocket, closed.code, str(closed))
        except (WebSocketDisconnect, OSError):
            LOG.info("a stream client disconnected")
        except Exception as exc:  # noqa: BLE001 - the client gets the reason, the log the traceback
            LOG.exception("a stream failed")
            await _close(websocket, FAILED, f"the conversion failed ({type(exc).__name__}: {exc}); see the server log")

    async def _serve(self, websocket: WebSocket) -> None:
        stream = await self._start(websocket)
        await websocket.send_json(stream.ready())
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    converted = await asyncio.to_thread(stream.push, message["bytes"])
                    if converted:
                        await websocket.send_bytes(converted)
                elif read_json(message.get("text") or "").get("stats"):
                    await websocket.send_json({"stats": stream.stats()})
                else:
                    raise UserInputError('the only text message after the start is {"stats": true}')
            except MessageTooBigError as exc:
                raise StreamClosed(TOO_BIG, str(exc)) from None
            except UserInputError as exc:
                raise StreamClosed(POLICY, str(exc)) from None
            except RVCError as exc:
                raise StreamClosed(FAILED, f"the conversion failed: {exc}") from None

    async def _start(self, websocket: WebSocket) -> PcmStream:
        """Read and check the start message; open the voice's stream (in a worker thread: it loads models)."""
        try:
            message = await asyncio.wait_for(websocket.receive(), START_TIMEOUT_S)
        except TimeoutError:
            raise StreamClosed(POLICY, f"no start message within {START_TIMEOUT_S:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise OSError("the client left before its start message")
        try:
            if message.get("text") is None:
                raise UserInputError('the first message must be the JSON start message, e.g. {"voice": "alice"}')
            fields = read_json(message["text"])
            login = fields.get("user"), fields.get("password")
            from_message = (str(login[0]), str(login[1])) if None not in login else None
            self._check_login(basic_credentials(websocket.headers.get("authorization")) or from_message)
            request = parse_start({k: v for k, v in fields.items() if k not in CREDENTIAL_FIELDS})
            return await asyncio.to_thread(open_pcm_stream, project=self.ctx.project, request=request,
                                           cache=self.ctx.cache)  # fmt: skip
        except RVCError as exc:
            raise StreamClosed(POLICY, str(exc)) from None


async def _close(websocket: WebSocket, code: int, message: str) -> None:
    """Send the error line and close; a client that already left is no error."""
    from starlette.websockets import WebSocketDisconnect

    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.send_json({"error": message})
        await websocket.close(code, reason=_reason(message))


def _reason(message: str) -> str:
    """A close frame's reason holds at most 123 bytes of UTF-8."""
    data = message.encode("utf-8")
    return message if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."


def stream_routes(ctx: AppContext, auth: tuple[str, str] | None) -> list[Any]:
    """The routes `tools.web.serve` adds to the app's server."""
    return [StreamEndpoint(ctx, auth).route()]
