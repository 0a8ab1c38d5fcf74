"""`/probe` reaches only what the config allows, within its own concurrency limit.

Requests go to an in-process app (no scheduler) and to loopback listeners that record every
connection, so a refused probe is shown to send nothing at all.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.checks import Target
from exporter.config import Config, parse_config
from exporter.errors import ConfigError
from exporter.probe_policy import parse_allow_pattern
from exporter.store import ResultStore
from exporter.web import ExporterState, ProbeRefused, make_app, probe_job
from tests.peers.exporter import run_exporter
from tests.peers.nginx import Nginx
from tests.test_serve import poll_metrics, samples, value

SECRET = "S3CR3T-bearer-value"
TOKEN = "T0KEN-in-path"
WAIT_S = 10.0  # bound on waiting for a listener to see connections
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
Client = TestClient[web.Request, web.Application]


class Listener:
    """A loopback TCP server that records what each connection sent.

    With `hold` it answers nothing and keeps every connection open until `release()`: a
    silent peer that pins a probe for as long as the test wants.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.requests: list[bytes] = []
        self.connections = 0
        self.changed = asyncio.Condition()
        self.released = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self, host: str) -> int:
        """Listen on a free port of `host`; returns the port."""
        self.server = await asyncio.start_server(self._serve, host, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.changed:
            self.connections += 1
            self.changed.notify_all()
        try:
            if self.hold:
                await self.released.wait()
                return
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            writer.write(OK_RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_for_connections(self, count: int) -> None:
        """Until `count` connections arrived (bounded by WAIT_S)."""
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(lambda: self.connections >= count)

    def release(self) -> None:
        """Close every held connection."""
        self.released.set()

    async def close(self) -> None:
        """Stop listening and close held connections."""
        self.release()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@asynccontextmanager
async def listener(
    host: str = "127.0.0.1", *, hold: bool = False
) -> AsyncIterator[tuple[Listener, int]]:
    """A started `Listener` and its port."""
    peer = Listener(hold=hold)
    port = await peer.start(host)
    try:
        yield peer, port
    finally:
        await peer.close()


@asynccontextmanager
async def exporter_client(config: Config) -> AsyncIterator[tuple[Client, ExporterState]]:
    """The exporter's app in-process, without background checks."""
    state = ExporterState(config=config, config_path=None, store=ResultStore(config.source.value))
    async with TestClient(
        TestServer(make_app(state, run_scheduler=False), host="127.0.0.1")
    ) as client:
        yield client, state


def bearer_config(port: int, probe_section: str = "") -> Config:
    """A custom HTTP flow carrying a bearer header and a token in its path."""
    return parse_config(
        f"""
source: endpoint_server
extra_flows:
  - id: api_bearer
    check: http
    target: "127.0.0.1:{port}"
    headers: {{Authorization: "Bearer {SECRET}"}}
    path: "/health?token={TOKEN}"
{probe_section}
""",
        "test.yaml",
    )


def rejected(state: ExporterState, reason: str) -> float | None:
    """certero_flow_exporter_probe_rejected_total for `reason`."""
    found = samples(state.metrics.render().decode())
    return value(found, "certero_flow_exporter_probe_rejected_total", reason=reason)


async def test_a_flows_header_reaches_its_own_target_and_no_other() -> None:
    """A flow's headers and path go to its configured target; an unconfigured one gets a 403
    naming the rule and not even a connection."""
    async with (
        listener() as (own, own_port),
        listener("127.0.0.3") as (other, other_port),
    ):
        config = bearer_config(own_port)
        async with exporter_client(config) as (client, state):
            response = await client.get(
                "/probe", params={"module": "api_bearer", "target": f"127.0.0.1:{own_port}"}
            )
            assert response.status == 200
            assert "probe_success 1" in await response.text()

            response = await client.get(
                "/probe", params={"module": "api_bearer", "target": f"127.0.0.3:{other_port}"}
            )
            assert response.status == 403
            assert await response.text() == (
                f"probe refused: target 127.0.0.3:{other_port} is not a configured target of "
                "flow api_bearer and matches no probe.modules.api_bearer.allow pattern\n"
            )
            # The same host on another port is not the flow's target either.
            response = await client.get(
                "/probe", params={"module": "api_bearer", "target": f"127.0.0.1:{other_port}"}
            )
            assert response.status == 403
            assert rejected(state, "policy") == 2
    assert len(own.requests) == 1
    assert f"Authorization: Bearer {SECRET}".encode() in own.requests[0]
    assert f"GET /health?token={TOKEN} HTTP/1.1".encode() in own.requests[0]
    assert other.connections == 0


async def test_the_global_allow_list_never_carries_a_flows_settings() -> None:
    """`probe.allow` opens bare check modules only; a flow needs its own modules entry."""
    async with (
        listener() as (own, own_port),
        listener("127.0.0.3") as (other, other_port),
    ):
        config = bearer_config(own_port, 'probe: {allow: ["127.0.0.0/8"]}')
        async with exporter_client(config) as (client, _):
            flow = await client.get(
                "/probe", params={"module": "api_bearer", "target": f"127.0.0.3:{other_port}"}
            )
            assert flow.status == 403
            bare = await client.get(
                "/probe", params={"module": "http", "target": f"127.0.0.3:{other_port}"}
            )
            assert bare.status == 200
        assert len(other.requests) == 1
        assert b"Authorization" not in other.requests[0]
        assert b"GET / HTTP/1.1" in other.requests[0]
        assert own.connections == 0

        config = bearer_config(own_port, 'probe: {modules: {api_bearer: {allow: ["127.0.0.3"]}}}')
        async with exporter_client(config) as (client, _):
            flow = await client.get(
                "/probe", params={"module": "api_bearer", "target": f"127.0.0.3:{other_port}"}
            )
            assert flow.status == 200
        assert f"Bearer {SECRET}".encode() in other.requests[1]


async def test_a_bare_check_needs_the_allow_list() -> None:
    """Out of the box a bare check module probes nothing; the 403 names probe.allow."""
    async with listener() as (peer, port):
        async with exporter_client(bearer_config(port)) as (client, state):
            response = await client.get(
                "/probe", params={"module": "tcp", "target": f"127.0.0.1:{port}"}
            )
            assert response.status == 403
            assert await response.text() == (
                f"probe refused: target 127.0.0.1:{port} matches no probe.allow or "
                "probe.modules.tcp.allow pattern (a bare check module probes only targets "
                "allowed there)\n"
            )
            assert rejected(state, "policy") == 1
            assert rejected(state, "concurrency") == 0
        assert peer.connections == 0


@pytest.mark.parametrize(
    ("section", "target", "allowed"),
    [
        ('probe: {allow: ["127.0.0.0/30"]}', "127.0.0.1:{port}", True),
        ('probe: {allow: ["127.0.0.0/30"]}', "127.0.0.5:{port}", False),
        ('probe: {allow: ["127.0.0.1"]}', "127.0.0.1:{port}", True),
        ('probe: {allow: ["LOCAL*"]}', "localhost:{port}", True),
        ('probe: {allow: ["local*"]}', "127.0.0.1:{port}", False),
        ('probe: {allow: ["*.example"]}', "localhost:{port}", False),
        ('probe: {allow: ["127.0.0.1:{port}-{port}"]}', "127.0.0.1:{port}", True),
        ('probe: {allow: ["127.0.0.1:1-{below}"]}', "127.0.0.1:{port}", False),
        ('probe: {allow: ["[::1]:{port}"]}', "127.0.0.1:{port}", False),
        ('probe: {modules: {tcp: {allow: ["localhost:{port}"]}}}', "localhost:{port}", True),
        ('probe: {modules: {ssh: {allow: ["localhost"]}}}', "localhost:{port}", False),
    ],
)
async def test_allow_list_by_network_name_and_port(
    section: str, target: str, allowed: bool
) -> None:
    """CIDR and address patterns match address targets, name patterns names (as written,
    case-insensitively), and a port or range narrows either; other modules' lists do not apply."""
    async with listener() as (peer, port):

        def fill(text: str) -> str:
            return text.replace("{port}", str(port)).replace("{below}", str(port - 1))

        config = bearer_config(port, fill(section))
        async with exporter_client(config) as (client, _):
            response = await client.get("/probe", params={"module": "tcp", "target": fill(target)})
        assert response.status == (200 if allowed else 403)
        if allowed:
            await peer.wait_for_connections(1)
        else:
            assert peer.connections == 0


def test_a_flows_network_counts_by_membership() -> None:
    """A host inside a flow's network is its target (as the scheduler expands it); the
    network's own and broadcast addresses and hosts outside are not."""
    config = parse_config(
        """
source: endpoint_server
extra_flows:
  - {id: ring, check: tcp, port: 7000, targets: ["127.0.0.0/29", "Db.Example:7001"]}
""",
        "test.yaml",
    )
    scheduled = {str(job.target) for job in config.jobs}
    assert probe_job(config, "ring", "127.0.0.5").target == Target("127.0.0.5", 7000)
    for target in ("127.0.0.0:7000", "127.0.0.7:7000", "127.0.0.8:7000", "127.0.0.5:7001"):
        assert target not in scheduled
        with pytest.raises(ProbeRefused):
            probe_job(config, "ring", target)
    assert probe_job(config, "ring", "db.example:7001").target.port == 7001
    with pytest.raises(ProbeRefused):
        probe_job(config, "ring", "db.example")  # the flow's port 7000, not the target's 7001


def test_probe_builds_exactly_the_scheduled_job() -> None:
    """For a configured target `/probe` runs the very job the scheduler runs."""
    config = parse_config(
        """
source: endpoint_server
targets: {application_server: ["app.example"]}
flows:
  https_app_relay: {port: 8443, path: /health, ca_file: /etc/ca.pem, timeout: 2s}
""",
        "test.yaml",
    )
    (scheduled,) = [job for job in config.jobs if job.flow_id == "https_app_relay"]
    assert probe_job(config, "https_app_relay", "app.example") == scheduled
    assert probe_job(config, "https_app_relay", "app.example:8443") == scheduled


async def test_overrides_apply_to_a_flow_without_targets(nginx: Nginx) -> None:
    """A flow with no targets but a modules allow entry probes with its own port, path and CA."""
    overrides = f"port: {nginx.valid_port}, ca_file: {nginx.pki.ca_cert}, body_regex: flow-ok"
    text = f"""
source: endpoint_server
flows:
  https_app_relay: {{{overrides}{{path}}}}
probe: {{modules: {{https_app_relay: {{allow: ["localhost"]}}}}}}
"""
    config = parse_config(text.replace("{path}", ", path: /health"), "test.yaml")
    assert not [job for job in config.jobs if job.flow_id == "https_app_relay"]
    job = probe_job(config, "https_app_relay", "localhost")
    assert job.target == Target("localhost", nginx.valid_port)
    async with exporter_client(config) as (client, _):
        response = await client.get(
            "/probe", params={"module": "https_app_relay", "target": "localhost"}
        )
        assert response.status == 200
        assert "probe_success 1" in await response.text()
    # Control: without the path override the same probe asks for / and fails.
    config = parse_config(text.replace("{path}", ""), "test.yaml")
    async with exporter_client(config) as (client, _):
        response = await client.get(
            "/probe", params={"module": "https_app_relay", "target": "localhost"}
        )
        assert "probe_success 0" in await response.text()


async def test_a_full_probe_limit_answers_503_at_once() -> None:
    """With probe.concurrency 2 and two probes held by a silent peer, a third is a 503
    while the two still run; they finish once the peer lets go."""
    async with listener(hold=True) as (peer, port):
        config = bearer_config(port, f'probe: {{concurrency: 2, allow: ["127.0.0.1:{port}"]}}')
        async with exporter_client(config) as (client, state):
            params = {"module": "http", "target": f"127.0.0.1:{port}"}
            held = [asyncio.create_task(client.get("/probe", params=params)) for _ in range(2)]
            await peer.wait_for_connections(2)
            third = await client.get("/probe", params=params)
            assert third.status == 503
            assert await third.text() == (
                "probe refused: 2 probes already running (probe.concurrency)\n"
            )
            assert not any(task.done() for task in held)
            assert rejected(state, "concurrency") == 1
            peer.release()
            for response in await asyncio.gather(*held):
                assert response.status == 200
            assert state.probes_running == 0
        assert peer.connections == 2


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        (
            "probe:\n  modules:\n    api_bearr: {allow: [10.0.0.0/8]}\n",
            10,
            "probe.modules.api_bearr: unknown module 'api_bearr': give a flow id",
        ),
        (
            "probe:\n  allow:\n    - 10.0.0.*\n",
            10,
            "probe.allow[0]: '10.0.0.*': name patterns never match addresses",
        ),
        (
            "probe:\n  allow:\n    - 'a.example:9-1'\n",
            10,
            "probe.allow[0]: 'a.example:9-1': ports must be from 1 to 65535",
        ),
        (
            "probe:\n  allow:\n    - 'a b'\n",
            10,
            "probe.allow[0]: 'a b' is not a valid host name pattern",
        ),
        (
            "probe:\n  allow:\n    - '10.0.0.0/33'\n",
            10,
            "probe.allow[0]: '10.0.0.0/33' is not a valid address or CIDR",
        ),
        (
            "probe:\n  allow:\n    - 'x:٤٤٣'\n",
            10,
            "probe.allow[0]: 'x:٤٤٣': expected :port or :low-high",
        ),
        (
            "probe: {concurrency: 0}\n",
            8,
            "probe.concurrency: Input should be greater than or equal to 1",
        ),
    ],
)
def test_probe_section_errors_name_file_and_line(section: str, line: int, message: str) -> None:
    """A bad probe section is a located config error like any other."""
    text = (
        "source: endpoint_server\nextra_flows:\n  - id: api_bearer\n    check: http\n"
        '    target: "127.0.0.1:80"\n    headers: {Authorization: "Bearer x"}\n'
        '    path: "/health"\n' + section
    )
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "test.yaml")
    assert str(excinfo.value).startswith(f"test.yaml:{line}: {message}"), str(excinfo.value)


def test_pattern_forms() -> None:
    """IPv6 takes brackets before a port; `*` spans dots; names never match addresses."""
    assert parse_allow_pattern("[fd00::/8]:443").matches(Target("fd00::1", 443))
    assert not parse_allow_pattern("[fd00::/8]:443").matches(Target("fd00::1", 444))
    assert parse_allow_pattern("::1").matches(Target("::1", 22))
    assert parse_allow_pattern("*.corp.example").matches(Target("a.b.CORP.example", 1))
    assert not parse_allow_pattern("*.corp.example").matches(Target("corp.example", 1))
    assert not parse_allow_pattern("*").matches(Target("10.0.0.1", 1))
    assert not parse_allow_pattern("10.0.0.0/8:22").matches(Target("10.0.0.1"))


@contextmanager
def tcp_peer(*, answer: bool) -> Iterator[int]:
    """A loopback listener in a thread: accepts and closes (a healthy TCP flow) or accepts
    and holds (a silent peer); bounded by the socket's close at exit."""
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            if answer:
                connection.close()
            else:
                held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(WAIT_S)
        for connection in held:
            connection.close()


FLOOD = 150  # concurrent probes, against an exporter allowed 64 descriptors
NOFILE = 64
RESULT_LINE = re.compile(r'^certero_flow_result\{.*result="(\w+)".*\} 1$', re.MULTILINE)


async def _flood(port: int, target: str) -> list[tuple[int, str] | None]:
    """FLOOD concurrent /probe requests; None for a connection closed without an answer."""

    async def one() -> tuple[int, str] | None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"GET /probe?module=ssh&target={target} HTTP/1.1\r\nHost: x\r\n"
                "X-Prometheus-Scrape-Timeout-Seconds: 1.5\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
        except ConnectionError:
            return None
        finally:
            writer.close()
        if not data:
            return None
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode()

    async with asyncio.timeout(60):
        return await asyncio.gather(*(one() for _ in range(FLOOD)))


def test_descriptor_exhaustion_never_blames_a_target(tmp_path: Path) -> None:
    """Flooding /probe under a 64-descriptor limit (soft = hard, so it cannot be raised):
    answered probes are a real result of the silent target or a 503, and healthy background
    flows stay ok or exporter_error.

    Connections the exporter has no descriptor to accept are closed unanswered by the event
    loop (libuv sheds them); answering needs a descriptor, so no status can reach them.
    """
    with tcp_peer(answer=True) as healthy, tcp_peer(answer=False) as silent:
        config_path = tmp_path / "config.yaml"
        flows = "".join(
            f'  - {{id: bg{i}, check: tcp, target: "127.0.0.1:{healthy}"}}\n' for i in range(10)
        )
        config_path.write_text(
            "source: endpoint_server\ndefaults: {interval: 1s, timeout: 1s}\n"
            f"scheduler: {{startup_spread: 1s}}\nextra_flows:\n{flows}"
            f'probe: {{allow: ["127.0.0.1:{silent}"]}}\n',
            encoding="utf-8",
        )
        with run_exporter(config_path, tmp_path, nofile=(NOFILE, NOFILE)) as exporter:
            poll_metrics(
                exporter,
                lambda f: value(f, "certero_flow_exporter_checks_total", result="ok") is not None,
            )
            port = int(exporter.base_url.rsplit(":", 1)[1])
            answers = asyncio.run(_flood(port, f"127.0.0.1:{silent}"))
            answered = [a for a in answers if a is not None]
            statuses = sorted({status for status, _ in answered})
            assert set(statuses) <= {200, 503}, statuses
            for status, body in answered:
                if status == 200:
                    assert RESULT_LINE.findall(body) == ["timeout"], body
                else:
                    assert body.startswith("probe refused: 32 probes already running") or (
                        body.startswith("not checked")
                        and "no free file descriptors (EMFILE)" in body
                    ), body
            assert 503 in statuses
            counted = samples(exporter.get("/metrics")[1])
            for reason in ("concurrency", "exporter_error"):
                refusals = sum(
                    1
                    for status, body in answered
                    if status == 503
                    and (reason == "concurrency") == body.startswith("probe refused")
                )
                assert (
                    value(counted, "certero_flow_exporter_probe_rejected_total", reason=reason)
                    == refusals
                )

            before = value(
                samples(exporter.get("/metrics")[1]),
                "certero_flow_exporter_checks_total",
                result="ok",
            )
            _, found = poll_metrics(
                exporter,
                lambda f: (
                    (value(f, "certero_flow_exporter_checks_total", result="ok") or 0)
                    > (before or 0)
                ),
            )
            results = {
                dict(labels)["result"]
                for (name, labels) in found
                if name == "certero_flow_exporter_checks_total"
            }
            assert results <= {"ok", "exporter_error"}, results
            log = exporter.log()
        assert "open file limit 64 is below scheduler.concurrency + probe.concurrency" in log
        assert "Too many open files" not in log


def test_serve_raises_the_soft_descriptor_limit(tmp_path: Path) -> None:
    """At start the soft open file limit is raised to the hard one, as Go programs do."""
    with run_exporter(None, tmp_path, nofile=(256, 4096)) as exporter:
        limits = Path(f"/proc/{exporter.process.pid}/limits").read_text(encoding="utf-8")
        assert re.search(r"^Max open files\s+4096\s+4096\s", limits, re.MULTILINE), limits
        assert "open file limit" not in exporter.log()


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("smb_endpoints", "flow smb_endpoints cannot be probed: disabled in the config"),
        ("https_web_ui", "flow https_web_ui is measured from client; this exporter stands on"),
        ("nope", "unknown module 'nope': give a flow id or one of"),
    ],
)
def test_modules_that_cannot_run_here_are_a_400(module: str, message: str) -> None:
    """A disabled flow, a flow of another vantage point or an unknown name is a 400 that says
    so."""
    config = parse_config(
        "source: endpoint_server\nflows: {smb_endpoints: {enabled: false}}\n", "test.yaml"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        probe_job(config, module, "127.0.0.1:1")
