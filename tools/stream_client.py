"""A client of the app's streaming API (`/stream/ws`): stream a WAV file through a voice, write the result.

    .venv/bin/python -m tools.stream_client --url ws://127.0.0.1:7865/stream/ws --voice alice \\
        --input-file in.wav --output-file out.wav --f0-method pm --block-time 0.25

The file is sent in chunks of `--chunk-ms` at real-time pace (as a microphone would), or as fast as
the server converts with `--as-fast-as-possible`; silence is appended so the last input samples come
out, and the output is aligned with the input (same length, same rate, same channels). `--auth
user:password` logs in when the app has a login. The messages are described in
`tools.api.stream_protocol`. Needs only numpy, soundfile and websockets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer_pack.specs import add_spec_flags
from infer_pack.stream_params import stream_param_specs


class StreamClientError(Exception):
    """The server refused or ended the stream (its message), or the input cannot be sent."""


@dataclass(frozen=True)
class StreamedAudio:
    audio: Any  # [frames, channels] int16
    sample_rate: int
    ready: dict[str, Any]
    stats: dict[str, Any]


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _answer(message: str | bytes) -> dict[str, Any]:
    """A text message from the server; its error as StreamClientError."""
    if isinstance(message, bytes):
        raise StreamClientError("the server sent audio where a JSON line was expected")
    answer: dict[str, Any] = json.loads(message)
    if "error" in answer:
        raise StreamClientError(f"the server refused the stream: {answer['error']}")
    return answer


async def stream_audio(
    url: str, start: dict[str, Any], audio: Any, *, realtime: bool = True, chunk_s: float = 0.02,
    headers: dict[str, str] | None = None,
) -> StreamedAudio:
    """Send int16 `audio` [frames, channels] at `start["sample_rate"]`; the converted audio, aligned to it."""
    import numpy as np
    from websockets.asyncio.client import connect

    rate, channels = int(start["sample_rate"]), int(audio.shape[1])
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps({**start, "format": "pcm_s16le", "channels": channels}))
        ready = _answer(await ws.recv())
        block, delay = int(ready["block_samples"]), int(ready["delay_samples"])
        total = -(-(audio.shape[0] + delay) // block) * block  # whole blocks that cover the input and the delay
        padded = np.concatenate((audio, np.zeros((total - audio.shape[0], channels), np.int16)))
        received: list[Any] = []

        async def receive() -> None:
            got = 0
            while got < total:
                message = await ws.recv()
                if isinstance(message, str):
                    _answer(message)
                    continue
                piece = np.frombuffer(message, dtype="<i2").reshape(-1, channels)
                received.append(piece)
                got += piece.shape[0]

        receiver = asyncio.create_task(receive())
        step, started = max(1, round(chunk_s * rate)), time.monotonic()
        for begin in range(0, total, step):
            await ws.send(padded[begin : begin + step].astype("<i2").tobytes())
            if realtime:
                await asyncio.sleep(max(0.0, started + (begin + step) / rate - time.monotonic()))
            if receiver.done():
                break
        await receiver
        await ws.send(json.dumps({"stats": True}))
        stats = _answer(await ws.recv())["stats"]
    out = np.concatenate(received)[delay : delay + audio.shape[0]]
    return StreamedAudio(out, rate, ready, stats)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.stream_client", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:7865/stream/ws", help="the app's stream address")
    parser.add_argument("--voice", required=True, help="a voice name in the project's weights/ (or a .pth path in it)")
    parser.add_argument("--index", default=None, help="a .index file inside the project (optional)")
    parser.add_argument("--input-file", required=True, type=Path, help="WAV (or FLAC/OGG) to stream")
    parser.add_argument("--output-file", required=True, type=Path, help="where to write the converted WAV")
    parser.add_argument("--auth", default=None, help="user:password when the app has a login")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per message in ms (default 20)")
    parser.add_argument("--as-fast-as-possible", action="store_true",
                        help="send without waiting for real time (a file conversion, not a live stream)")
    specs = stream_param_specs()
    add_spec_flags(parser, specs, defaults=dict.fromkeys(specs))  # None: not sent, the server's default
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import soundfile as sf
    from websockets.exceptions import WebSocketException

    args = parse_args(argv)
    headers = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep:
            print("error: give --auth as user:password", file=sys.stderr)
            return 2
        headers = basic_auth_header(user, password)
    audio, rate = sf.read(str(args.input_file), dtype="int16", always_2d=True)
    if audio.shape[1] > 2:
        audio = audio.mean(axis=1, keepdims=True).astype(np.int16)
    settings = {name: value for name, value in vars(args).items() if name in stream_param_specs() and value is not None}
    start = {"voice": args.voice, "sample_rate": int(rate), **settings, **({"index": args.index} if args.index else {})}
    try:
        result = asyncio.run(stream_audio(args.url, start, audio, realtime=not args.as_fast_as_possible,
                                          chunk_s=args.chunk_ms / 1000, headers=headers))  # fmt: skip
    except (StreamClientError, WebSocketException, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output_file.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.output_file), result.audio, result.sample_rate, subtype="PCM_16")
    s = result.stats
    print(f"streamed {audio.shape[0] / rate:.2f} s -> {args.output_file} ({result.sample_rate} Hz); {s['blocks']} blocks "
          f"of {s['block_ms']:g} ms, compute median {s['median_compute_ms']} ms, {s['late_blocks']} late; "
          f"latency {result.ready['latency_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
