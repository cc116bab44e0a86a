"""deploy/nginx-mtls/nginx.conf in a real nginx, with certificates made here by the openssl CLI.

Two upstreams behind the same shipped config (only paths and ports are rewritten):
* the real API (uvicorn, Postgres, Redis): no client certificate or one from another CA is refused
  by nginx; a certificate from the trusted CA reaches /healthz and /api/* (the API key still counts);
* a header echo server: the API receives X-Client-DN and X-Client-Verify from the TLS handshake
  only, and client-sent copies (and other client-cert headers) never get through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.env import ROOT, free_port, require
from tests.support.procs import ManagedProcess

pytestmark = [pytest.mark.deploy, pytest.mark.security]

CONF = ROOT / "deploy" / "nginx-mtls" / "nginx.conf"
NGINX = "/usr/sbin/nginx"
CLIENT_SUBJECT = "/O=Pedi Clinic/CN=clinic-app-01"
NO_CERT = "No required SSL certificate was sent"
BAD_CERT = "The SSL certificate error"
API_KEY = "mtls-test-key-0001"


# --- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]
    client_dn: str


def openssl(*args: str, cwd: Path) -> str:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"
    return result.stdout


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_ca(name: str, cwd: Path) -> None:
    openssl("req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/O=Pedi Test/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)  # fmt: skip


def issue(name: str, subject: str, ca: str, extensions: str, cwd: Path) -> tuple[Path, Path]:
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions
    )
    openssl("req", "-new", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)  # fmt: skip
    return cwd / f"{name}.crt", cwd / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require(shutil.which("openssl"), "openssl CLI not installed")
    cwd = tmp_path_factory.mktemp("pki")
    make_ca("ca", cwd)
    make_ca("other-ca", cwd)
    server = issue("server", "/CN=localhost", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n", cwd)  # fmt: skip
    client_ext = "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    client = issue("client", CLIENT_SUBJECT, "ca", client_ext, cwd)
    stranger = issue("stranger", CLIENT_SUBJECT, "other-ca", client_ext, cwd)  # same DN, wrong CA
    dn = openssl("x509", "-in", "client.crt", "-noout", "-subject", "-nameopt", "RFC2253", cwd=cwd)
    # nginx copies server.crt/key and ca.crt under the names the shipped config expects.
    tls = cwd / "tls"
    tls.mkdir()
    for source, target in ((server[0], "tls.crt"), (server[1], "tls.key"), (cwd / "ca.crt", "ca.crt")):
        shutil.copy(source, tls / target)
    return Pki(tls, cwd / "ca.crt", server[0], server[1], client, stranger, dn.strip().removeprefix("subject="))


def client(pki: Pki, cert: tuple[Path, Path] | None, tls_max: ssl.TLSVersion | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    if tls_max is not None:
        # Let this client offer old protocols, so a refusal can only come from the server.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated on purpose: that is what is being refused
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = tls_max
    return httpx.Client(verify=context, timeout=10)


# --- nginx -----------------------------------------------------------------------------------------


def render_conf(prefix: Path, tls: Path, listen_port: int, upstream_port: int) -> Path:
    """The shipped nginx.conf with test paths and ports; every rewritten token must exist."""
    text = CONF.read_text()
    replacements = {  # in order: the test's own paths live under /tmp too
        "/tmp/": f"{prefix}/",
        "/etc/nginx/tls/": f"{tls}/",
        "server 127.0.0.1:9000;": f"server 127.0.0.1:{upstream_port};",
        "listen 8443 ssl;": f"listen 127.0.0.1:{listen_port} ssl;",
    }
    for token, value in replacements.items():
        assert token in text, f"nginx.conf no longer contains {token!r}"
        text = text.replace(token, value)
    if os.geteuid() == 0:
        # As root the workers would switch to "nobody"; the test keeps them as the current user.
        text = "user root;\n" + text
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def wait_for_port(port: int, process: ManagedProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.alive, f"nginx exited:\n{process.tail()}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx not listening on {port}:\n{process.tail()}")


@pytest.fixture
def nginx_in_front(pki: Pki, tmp_path: Path, artifacts: Path) -> Iterator:
    """nginx_in_front(upstream_port) -> https base URL; stops every nginx it started."""
    require(Path(NGINX).exists(), "nginx not installed (scripts/install-tools installs Debian's nginx)")
    started: list[ManagedProcess] = []

    def start(upstream_port: int) -> str:
        port = free_port()
        prefix = tmp_path / f"nginx-{port}"
        prefix.mkdir()
        conf = render_conf(prefix, pki.dir, port, upstream_port)
        argv = [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"]
        process = ManagedProcess("nginx", argv, env={"PATH": os.environ["PATH"]}, log_path=artifacts / "nginx.log")
        started.append(process.start(wait=False))
        wait_for_port(port, process)
        return f"https://127.0.0.1:{port}"

    yield start
    for process in started:
        process.stop(timeout=10)


def refused(http: httpx.Client, url: str, message: str) -> None:
    """nginx refuses the request: a 400 naming the certificate problem, or no handshake at all."""
    try:
        response = http.get(url)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return
    assert response.status_code == 400, f"{url}: {response.status_code} {response.text[:200]}"
    assert message in response.text, response.text


# --- in front of the real API -----------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
def test_only_clients_of_the_trusted_ca_reach_the_api(stack, pki, nginx_in_front):
    api = stack.api(api_key=API_KEY)
    base = nginx_in_front(int(api.url.rsplit(":", 1)[1]))

    with client(pki, None) as anonymous:
        refused(anonymous, f"{base}/healthz", NO_CERT)
        refused(anonymous, f"{base}/api/jobs", NO_CERT)
    with client(pki, pki.stranger) as stranger:
        refused(stranger, f"{base}/healthz", BAD_CERT)
        refused(stranger, f"{base}/api/jobs", BAD_CERT)

    with client(pki, pki.client) as trusted:
        health = trusted.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert trusted.post(f"{base}/api/submit", json={"age_months": 24, "observations": "x"}).status_code == 401
        headers = {"x-api-key": API_KEY}
        body = {"age_months": 30, "observations": "Speaks in short phrases."}
        accepted = trusted.post(f"{base}/api/submit", json=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        status = trusted.get(f"{base}/api/status/{accepted.json()['job_id']}", headers=headers)
        assert status.status_code == 200 and status.json()["status"] == "queued"


# --- identity headers, seen by an echo upstream --------------------------------------------------------


class Echo(BaseHTTPRequestHandler):
    """Answers every GET with the request's headers as a JSON list of [name, value] pairs."""

    seen: list[list[list[str]]]

    def do_GET(self) -> None:
        pairs = [[name, value] for name, value in self.headers.items()]
        self.server.seen.append(pairs)
        body = json.dumps(pairs).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


FORGED = {
    "X-Client-DN": "CN=root,O=Forged",
    "x-client-verify": "SUCCESS-forged",
    "X-Forwarded-Client-Cert": "Hash=forged;Subject=CN=root",
    "X-SSL-Client-Cert": "forged",
    "X-SSL-Client-DN": "CN=root",
    "X-Client-Cert": "forged",
    "X-Forwarded-For": "203.0.113.66",
}


def values(pairs: list[list[str]], name: str) -> list[str]:
    return [value for key, value in pairs if key.lower() == name.lower()]


def test_identity_headers_come_from_the_handshake_and_cannot_be_forged(pki, nginx_in_front, echo_server):
    base = nginx_in_front(echo_server.server_address[1])

    with client(pki, pki.client) as trusted:
        plain = trusted.get(f"{base}/who").json()
        forged = trusted.get(f"{base}/who", headers=FORGED).json()
    for pairs in (plain, forged):
        assert values(pairs, "X-Client-DN") == [pki.client_dn]
        assert values(pairs, "X-Client-Verify") == ["SUCCESS"]
        assert values(pairs, "X-Forwarded-For") == ["127.0.0.1"]
        for name in ("X-Forwarded-Client-Cert", "X-SSL-Client-Cert", "X-SSL-Client-DN", "X-Client-Cert"):
            assert values(pairs, name) == [], f"{name} passed through: {pairs}"
    assert pki.client_dn == "CN=clinic-app-01,O=Pedi Clinic"

    with client(pki, pki.stranger) as stranger:
        refused(stranger, f"{base}/who", BAD_CERT)
    with client(pki, None) as anonymous:
        refused(anonymous, f"{base}/who", NO_CERT)
    assert len(echo_server.seen) == 2, "a refused request reached the upstream"


def test_tls_below_1_2_is_refused_by_the_server(pki, nginx_in_front, echo_server):
    base = nginx_in_front(echo_server.server_address[1])
    with client(pki, pki.client, tls_max=ssl.TLSVersion.TLSv1_2) as tls12:
        assert tls12.get(f"{base}/who").status_code == 200
    with client(pki, pki.client, tls_max=ssl.TLSVersion.TLSv1_1) as tls11, pytest.raises(httpx.ConnectError) as error:
        tls11.get(f"{base}/who")
    assert "PROTOCOL_VERSION" in str(error.value).upper(), error.value  # the server's protocol_version alert


# --- the Kubernetes example ------------------------------------------------------------------------------


def test_kubernetes_example_wires_the_shipped_config():
    here = CONF.parent
    kustomization = yaml.safe_load((here / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["nginx.conf"] and all((here / r).is_file() for r in kustomization["resources"])
    docs = list(yaml.safe_load_all((here / "kubernetes.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    conf = CONF.read_text()
    containers = {c["name"]: c for c in pod["containers"]}
    api, sidecar = containers["api"], containers["nginx-mtls"]

    assert pod["enableServiceLinks"] is False
    upstream = re.search(r"server 127\.0\.0\.1:(\d+);", conf).group(1)
    assert api["args"][api["args"].index("--host") + 1] == "127.0.0.1", "the API must not be reachable around nginx"
    assert api["args"][api["args"].index("--port") + 1] == upstream
    assert "/readyz" not in " ".join(api["livenessProbe"]["exec"]["command"])
    listen = int(re.search(r"listen (\d+) ssl;", conf).group(1))
    assert [p["containerPort"] for p in sidecar["ports"]] == [listen]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert volumes[mounts["/etc/nginx/nginx.conf"]["name"]]["configMap"]["name"] == generator["name"]
    tls_volume = volumes[mounts["/etc/nginx/tls"]["name"]]["secret"]
    files = {f"/etc/nginx/tls/{item['path']}" for item in tls_volume["items"]}
    assert files == set(re.findall(r"(/etc/nginx/tls/[\w.]+);", conf)), "Secret items vs paths in nginx.conf"
    assert "/tmp" in mounts, "nginx writes its pid and temp files to /tmp on a read-only root"
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"] and ctx["runAsNonRoot"]
        assert ctx["capabilities"]["drop"] == ["ALL"]
