"""nginx as a plain streaming reverse proxy, run as a subprocess from a generated config."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CONF = """worker_processes 1;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 100000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


def binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def start(
    nginx: str,
    tmp: Path,
    port: int,
    upstream_port: int,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Write the config under ``tmp`` and start nginx in the foreground (1 worker)."""
    conf = tmp / "nginx.conf"
    conf.write_text(CONF.format(tmp=tmp, port=port, upstream_port=upstream_port))
    log = (tmp / "nginx.stderr").open("wb")
    return subprocess.Popen(
        [
            nginx,
            "-e",
            "stderr",
            "-p",
            str(tmp),
            "-c",
            str(conf),
            "-g",
            f"daemon off; pid {tmp}/nginx.pid; error_log stderr warn;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=preexec_fn,  # the worker inherits the master's CPU affinity
    )
