"""gRPC over TLS and extra request headers against a real Triton that requires both.

The server uses Triton's --grpc-use-ssl and --grpc-restricted-protocol (which
expects the header `triton-grpc-protocol-<key>`), standing in for a Triton
behind an authenticating gateway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tuner.server.connection import Connection
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository

from .conftest import ROOT, TUNER, subprocess_env, write_profile

pytestmark = pytest.mark.timeout(180)
SECRET = "s3cret-token-for-tuner-tests"
HEADER = "triton-grpc-protocol-x-api-key"


def _certs(d: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make test certificates")
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=tuner-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = _certs(tmp_path_factory.mktemp("certs"))
    repo = prepare_repository(tmp_path_factory.mktemp("repo"), ["synthetic"])
    probe = Connection("probe", root_certificates=d / "ca.crt", headers=((HEADER, SECRET),))
    srv = EmbeddedServer(repo, tmp_path_factory.mktemp("log") / "ts.log", probe=probe, extra_args=(
        "--grpc-use-ssl=true", f"--grpc-server-cert={d / 'server.crt'}", f"--grpc-server-key={d / 'server.key'}",
        f"--grpc-root-cert={d / 'ca.crt'}",
        f"--grpc-restricted-protocol=model-repository,inference,health,metadata,statistics,model-config:x-api-key={SECRET}",
    ))
    try:
        srv.start(timeout_s=30)
        ctl = ServerControl(Connection(srv.url, root_certificates=d / "ca.crt", headers=((HEADER, SECRET),)))
        ctl.load("synthetic")
        ctl.close()
        yield srv, d
    finally:
        srv.stop()


@pytest.mark.triton
def test_sweep_over_tls_with_header_from_environment(tls_server, tmp_path):
    srv, certs = tls_server
    profile = write_profile(tmp_path / "p.toml", url=srv.url, max_batch_size=(8,), concurrency=(1, 4))
    text = profile.read_text() + (f'[server]\nroot_certificates = "{certs / "ca.crt"}"\n'
                                  f'[server.headers]\n{HEADER} = "env:TUNER_TEST_TOKEN"\n')
    profile.write_text(text)
    env = subprocess_env() | {"TUNER_TEST_TOKEN": SECRET}
    run = tmp_path / "run"
    proc = subprocess.run(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT, capture_output=True,
                          text=True, timeout=150, env=env)
    assert proc.returncode == 0, proc.stderr
    # the secret is never printed, logged or stored
    assert SECRET not in proc.stdout + proc.stderr
    for f in run.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


@pytest.mark.triton
def test_missing_header_and_missing_tls_are_one_line_errors(tls_server, tmp_path):
    srv, certs = tls_server
    profile = write_profile(tmp_path / "p.toml", url=srv.url)
    # plain text against a TLS endpoint
    proc = subprocess.run(TUNER + ["sweep", str(profile), "--out", str(tmp_path / "r1")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert proc.returncode == 3 and "--ssl" in proc.stderr and "Traceback" not in proc.stderr
    # TLS but no header
    proc = subprocess.run(TUNER + ["sweep", str(profile), "--root-certificates", str(certs / "ca.crt"),
                                   "--out", str(tmp_path / "r2")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=subprocess_env())
    assert proc.returncode == 3 and HEADER in proc.stderr and "--header" in proc.stderr
    # header given on the command line: works, and is not stored
    proc = subprocess.run(TUNER + ["measure", "synthetic", "--url", srv.url, "--root-certificates",
                                   str(certs / "ca.crt"), "--header", f"{HEADER}: {SECRET}", "--concurrency", "2",
                                   "--window-s", "0.3", "--warmup-s", "0.2", "--max-windows", "3",
                                   "--out", str(tmp_path / "r3")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert SECRET not in (tmp_path / "r3" / "results.jsonl").read_text()


@pytest.mark.triton
def test_check_uses_the_profiles_tls_and_headers(tls_server, tmp_path):
    """`tuner check` reaches the server as the profile says (TLS, headers), like sweep and measure."""
    srv, certs = tls_server
    env = subprocess_env() | {"TUNER_TEST_TOKEN": SECRET}
    fast = ["--window-s", "0.3", "--warmup-s", "0.2", "--max-windows", "3"]
    proc = subprocess.run(TUNER + ["measure", "synthetic", "--url", srv.url, "--root-certificates",
                                   str(certs / "ca.crt"), "--header", f"{HEADER}: {SECRET}", "--concurrency", "2",
                                   *fast, "--out", str(tmp_path / "base")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    profile = write_profile(tmp_path / "p.toml", url=srv.url, window_s=0.3)
    profile.write_text(profile.read_text() + (f'[server]\nroot_certificates = "{certs / "ca.crt"}"\n'
                                              f'[server.headers]\n{HEADER} = "env:TUNER_TEST_TOKEN"\n'))
    saved = subprocess.run(TUNER + ["baseline", "save", str(tmp_path / "base"), "--profile", str(profile),
                                    "--out", str(tmp_path / "b.json")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert saved.returncode == 0, saved.stderr
    check = subprocess.run(TUNER + ["check", str(profile), "--baseline", str(tmp_path / "b.json"), "--out",
                                    str(tmp_path / "check"), "--max-throughput-drop", "off", "--max-latency-rise",
                                    "off"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert check.returncode == 0, check.stderr
    assert "checked" in check.stdout and SECRET not in check.stdout + check.stderr
    assert (tmp_path / "check" / "comparison.json").exists()


def test_inline_secret_in_profile_is_refused(tmp_path):
    from tuner.errors import ProfileError
    from tuner.profile import parse_profile

    with pytest.raises(ProfileError, match="env:VAR"):
        parse_profile(f'[model]\nname = "m"\n[server.headers]\nauthorization = "Bearer {SECRET}"\n', "p.toml")
    assert os.environ.get("TUNER_TEST_TOKEN") is None
