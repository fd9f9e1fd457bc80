"""schemathesis against /openapi.json: no 5xx for any generated input, responses match the schema.

schemathesis calls the API synchronously, so the node's control loop runs on its own thread here
(as in ``handoff122 serve``), and the API reaches it through the bridge.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.conftest import Node, start_node, stop_node


class ControlThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="control", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def threaded_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    control = ControlThread()
    tmp: Path = tmp_path_factory.mktemp("schema")
    node = control.run(start_node(f"sqlite+aiosqlite:///{tmp / 'h.sqlite3'}", tmp))
    try:
        yield node
    finally:
        control.run(stop_node(node))
        control.close()


@pytest.fixture(scope="module")
def api_schema(threaded_node: Node):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(threaded_node.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_on_generated_input(case, threaded_node: Node) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=threaded_node.url, headers=threaded_node.auth("admin"),
                           checks=[not_a_server_error, response_schema_conformance])
