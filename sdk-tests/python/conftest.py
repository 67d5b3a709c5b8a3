"""Spawns the audit-testkit binary (AUDIT_TESTKIT_BIN) once per session."""

import json
import os
import subprocess
import urllib.request

import pytest
from workos import WorkOSClient


class Testkit:
    def __init__(self, url, organization_id):
        self.url = url
        self.organization_id = organization_id

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode() or "null")

    def events(self, org=None):
        org = org or self.organization_id
        return self._call("GET", f"/_testkit/events?organization_id={org}")["data"]

    def requests(self):
        return self._call("GET", "/_testkit/requests")["data"]

    def fault(self, rule):
        return self._call("POST", "/_testkit/faults", rule)

    def reset(self):
        self._call("POST", "/_testkit/reset", {})

    def sdk(self, api_key="sk_test_python"):
        return WorkOSClient(api_key=api_key, client_id="client_test", base_url=self.url)


@pytest.fixture(scope="session")
def testkit():
    binary = os.environ.get("AUDIT_TESTKIT_BIN")
    if not binary:
        pytest.fail("set AUDIT_TESTKIT_BIN to the absolute path of the audit-testkit binary")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1:0", "--export-delay", "300ms"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())
        yield Testkit(first["url"], first["organization_id"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture
def tk(testkit):
    testkit.reset()
    return testkit


@pytest.fixture
def client(tk):
    return tk.sdk()
