"""The web server: loopback by default, --auth guards every endpoint, bad flags are refused clearly."""

from __future__ import annotations

import http.cookiejar
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from helpers_app import app_in_subprocess


def _status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_flags_default_to_loopback_and_listen_binds_all() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("infer_web", REPO_ROOT / "infer-web.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from tools.web import settings_from_args

    default = settings_from_args(module.parse_args([]))
    assert (default.host, default.port, default.auth) == ("127.0.0.1", 7865, None)
    listen = settings_from_args(module.parse_args(["--listen", "--port", "9000", "--auth", "ann:pa:ss"]))
    assert (listen.host, listen.port, listen.auth) == ("0.0.0.0", 9000, ("ann", "pa:ss"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth", "nopassword"], "user:password"),
        (["--port", "70000"], "between 1 and 65535"),
        (["--root", "/definitely/not/here"], "does not exist"),
        (["--listen"], "Add --auth user:password (recommended), or --no-auth"),
        (["--host", "0.0.0.0"], "start trainings and conversions"),
        (["--max-audio-minutes", "0"], "must be positive"),
    ],
)
def test_bad_flags_exit_with_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    args = ["--root", str(tmp_path), *flags]
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infer-web.py"), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=str(REPO_ROOT),
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def _upload_status(opener: urllib.request.OpenerDirector, base: str, size: int) -> int:
    boundary = "b" + uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + "/gradio_api/upload", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _non_loopback_address() -> str | None:
    """An address of this machine that is not 127.x (None when there is none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            address = sock.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_auth_guards_every_endpoint_and_loopback_only(tmp_path: Path) -> None:
    from gradio_client import Client

    root = tmp_path / "project"
    root.mkdir()
    with app_in_subprocess(root, "--auth", "alice:s3cret", "--max-upload-mb", "1") as (url, _proc):
        base = url.rstrip("/")
        # Raw HTTP without credentials: the config, the API description, calls, uploads and files are refused.
        for path in ("/config", "/gradio_api/info", "/gradio_api/queue/status", "/gradio_api/file=/etc/hostname"):
            assert _status(base + path) == 401, path
        join = json.dumps({"data": [], "fn_index": 0, "session_hash": "x", "event_data": None}).encode()
        assert _status(base + "/gradio_api/queue/join", join, {"Content-Type": "application/json"}) == 401
        assert _status(base + "/gradio_api/call/asset_status", b'{"data": []}',
                       {"Content-Type": "application/json"}) == 401
        assert _status(base + "/gradio_api/upload", b"--x--", {"Content-Type": "multipart/form-data; boundary=x"}) == 401
        # A wrong password is refused; the right one logs in and can call the app.
        assert _status(base + "/login", b"username=alice&password=wrong",
                       {"Content-Type": "application/x-www-form-urlencoded"}) in (400, 401)
        from gradio_client.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        client = Client(url, auth=("alice", "s3cret"), verbose=False)
        table = client.predict(api_name="/asset_status")
        assert 'data-asset="hubert"' in table and 'data-present="false"' in table

        # Logged in, uploads work up to --max-upload-mb and are refused above it.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(urllib.request.Request(base + "/login", data=b"username=alice&password=s3cret",
                                           headers={"Content-Type": "application/x-www-form-urlencoded"}))
        assert _upload_status(opener, base, 100_000) == 200
        assert _upload_status(opener, base, 2_000_000) == 413

        # Bound to loopback only: another address of this machine does not answer.
        other = _non_loopback_address()
        if other is not None:
            port = int(base.rsplit(":", 1)[1])
            with socket.socket() as sock:
                sock.settimeout(2)
                assert sock.connect_ex((other, port)) != 0



def test_an_open_server_needs_an_explicit_no_auth() -> None:
    from infer_pack.errors import UserInputError
    from tools.web import check_open_server

    assert check_open_server("127.0.0.1", None, False) is None
    assert check_open_server("0.0.0.0", ("ann", "secret"), False) is None
    with pytest.raises(UserInputError, match="without a login"):
        check_open_server("0.0.0.0", None, False)
    warning = check_open_server("0.0.0.0", None, True)
    assert warning is not None and "overwrite the voices" in warning
