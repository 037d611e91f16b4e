"""The coordinator's HTTP service on a real server: the token, leases and 409s over the wire, data only for a current
lease, hostile sample names, the status page."""

from __future__ import annotations

from pathlib import Path

import requests

from distributed.training.coordinator import Coordinator, create_app
from distributed.training.dataset import chunks, make_synthetic
from distributed.training.leases import LeaseBook
from distributed.worker.threaded import ThreadServer

TOKEN = "t0ken"


def test_the_coordinator_over_http(tmp_path: Path) -> None:
    names = make_synthetic(tmp_path / "data", 6)
    book = LeaseBook(tmp_path / "leases.db", lease_s=30.0)
    book.load(chunks(names, 4))
    coordinator = Coordinator(tmp_path / "data", book, TOKEN, ["/ip4/127.0.0.1/tcp/1/p2p/x"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with ThreadServer(create_app(coordinator)) as server:
        url = server.url
        assert requests.post(f"{url}/v1/lease", json={"peer": "p"}, timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer guess"}
        assert requests.post(f"{url}/v1/lease", json={"peer": "p"}, headers=wrong, timeout=5).status_code == 401
        lease = requests.post(f"{url}/v1/lease", json={"peer": "p"}, headers=auth, timeout=5).json()["lease"]
        assert lease["samples"] == names[:4]
        data = requests.post(
            f"{url}/v1/data", json={"lease_id": lease["id"], "samples": lease["samples"]}, headers=auth, timeout=5
        )
        assert [item["caption"].startswith("a ") for item in data.json()] == [True] * 4
        hostile = {"lease_id": lease["id"], "samples": ["../leases.db"]}
        assert requests.post(f"{url}/v1/data", json=hostile, headers=auth, timeout=5).status_code == 404
        report = {"lease_id": lease["id"], "samples": 4, "loss": 0.5, "peer": "p"}
        assert requests.post(f"{url}/v1/report", json=report, headers=auth, timeout=5).json() == {"epoch": 0}
        again = requests.post(f"{url}/v1/report", json=report, headers=auth, timeout=5)
        assert again.status_code == 409 and "already done" in again.json()["detail"]
        stale = requests.post(f"{url}/v1/data", json={"lease_id": lease["id"], "samples": []}, headers=auth, timeout=5)
        assert stale.status_code == 409  # a finished lease gets no more data
        assert requests.get(f"{url}/v1/dht", headers=auth, timeout=5).json()["initial_peers"][0].startswith("/ip4/127")
        status = requests.get(f"{url}/status", timeout=5).json()
        assert (
            status["reports"] == 1 and status["refused"] == 2 and status["samples"] == 4
        )  # the duplicate, the stale data
        assert "Samples reported" in requests.get(f"{url}/", timeout=5).text
    book.close()
