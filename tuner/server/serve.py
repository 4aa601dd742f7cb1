"""`tuner serve`: the embedded Triton in the foreground, until Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Callable

from tuner.errors import ServerError
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer


def serve_forever(model_repository: Path, grpc_port: int | None, load: list[str], log: Path,
                  echo: Callable[[str], None] = print) -> None:
    if not Path(model_repository).is_dir():
        raise ServerError(f"model repository {model_repository} is not a folder; pass --model-repository DIR")
    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    old = signal.signal(signal.SIGTERM, on_signal)
    # a user's repository: its configs may leave fields for Triton to complete
    with EmbeddedServer(Path(model_repository).resolve(), log, grpc_port=grpc_port,
                        auto_complete=True) as srv:
        control = ServerControl(srv.url, srv.log_path)
        for model in load:
            control.load(model)
        echo(f"Triton ready: grpc {srv.url}  metrics {srv.metrics_url}  (log {log}); Ctrl-C stops it")
        try:
            while not stop["now"]:
                if not srv.alive():
                    raise ServerError(f"tritonserver exited; log {log}: {srv.log_tail(3, one_line=True)}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            control.close()
            signal.signal(signal.SIGTERM, old)
