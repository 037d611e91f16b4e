"""What a webui worker is sent: its checkpoint title, the scripts it has, never ours; who sits a job out."""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

from PIL import Image

from distributed.engine.config import FleetConfig
from distributed.engine.costmodel import Workload
from distributed.engine.dispatcher import Job
from distributed.engine.fleet import Fleet, WorkerState
from distributed.engine.jobs import JobSpec
from distributed.master.payload import Checkpoint, ScriptArgs
from distributed.master.preflight import Needs, prepare
from tests.faults import fake_worker

CHECKPOINT = Checkpoint("v15.safetensors [abcdef0123]", model_name="v15", short_hash="abcdef0123")
MODELS = [{"title": "sd15-renamed.safetensors [abcdef0123]", "model_name": "sd15-renamed", "hash": "abcdef0123"}]
SCRIPTS = [
    {"name": "controlnet", "is_alwayson": True, "is_img2img": False, "args": []},
    {"name": "distributed", "is_alwayson": True, "is_img2img": False, "args": []},
]


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class WebuiPeer:
    """An A1111-like peer that records what it is sent; `loras` is what its /sdapi/v1/loras lists."""

    def __init__(self, loras: list[str]) -> None:
        self.loras = loras
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/sdapi/v1/sd-models"):
            return 200, MODELS
        if path.startswith("/sdapi/v1/script-info"):
            return 200, SCRIPTS
        if path.startswith("/sdapi/v1/loras"):
            return 200, [{"name": n, "alias": n} for n in self.loras]
        if path.startswith("/sdapi/v1/progress"):
            return 200, {"progress": 0, "state": {"job_count": 0}}
        if path.startswith("/sdapi/v1/txt2img"):
            request = json.loads(body)
            with self.lock:
                self.requests.append(request)
            count = request["batch_size"]
            seeds = [request["seed"] + k for k in range(count)]
            info = {"all_seeds": seeds, "all_subseeds": seeds, "infotexts": ["x"] * count}
            return 200, {"images": [_png()] * count, "info": json.dumps(info)}
        return 404, {"detail": "Not Found"}


def test_worker_gets_its_title_the_scripts_it_has_and_a_do_not_distribute() -> None:
    peer, bare = WebuiPeer(loras=["detail"]), WebuiPeer(loras=[])
    with fake_worker(peer) as with_lora, fake_worker(bare) as without_lora:
        config = FleetConfig(workers=[{"name": "a", "url": with_lora}, {"name": "b", "url": without_lora}])
        fleet = Fleet(config)
        unit = {"enabled": True, "image": Image.new("RGB", (4, 4), (9, 9, 9))}
        needs = Needs(
            kind="txt2img",
            checkpoint=CHECKPOINT,
            loras=frozenset({"detail"}),
            scripts=(ScriptArgs("controlnet", (unit,)), ScriptArgs("distributed", (True, [], False, False))),
        )
        preps = prepare(list(fleet), needs, timeout_s=10)
        assert preps["b"].excluded is not None and "has no LoRA detail" in preps["b"].excluded
        assert fleet.members["b"].state == WorkerState.MODEL_MISSING
        assert preps["a"].excluded is None

        payload = {"prompt": "<lora:detail:1> a fox", "override_settings": {"CLIP_stop_at_last_layers": 2}}
        spec = JobSpec("txt2img", payload, images=4, seed=50, subseed=7, workload=Workload(64, 64, 4))
        spec.per_worker = {"a": preps["a"].request}
        result = Job(fleet, spec, workers=["a"], indices=range(1, 4)).run()
        fleet.close()

    assert [image.index for image in result.images] == [1, 2, 3]
    assert [image.seed for image in result.images] == [51, 52, 53]
    sent = peer.requests
    assert sum(r["batch_size"] for r in sent) == 3
    for request in sent:
        assert request["override_settings"] == {
            "CLIP_stop_at_last_layers": 2,
            "sd_model_checkpoint": "sd15-renamed.safetensors [abcdef0123]",
        }
        assert request["alwayson_scripts"]["distributed"] == {"args": [False]}
        forwarded = request["alwayson_scripts"]["controlnet"]["args"][0]
        assert forwarded["enabled"] is True
        picture = Image.open(io.BytesIO(base64.b64decode(forwarded["image"])))
        assert picture.getpixel((0, 0)) == (9, 9, 9)
    assert bare.requests == []


def test_a_worker_that_failed_before_is_asked_again_and_readmitted() -> None:
    peer = WebuiPeer(loras=[])
    with fake_worker(peer) as url:
        fleet = Fleet(FleetConfig(workers=[{"name": "a", "url": url}]))
        member = fleet.members["a"]
        member.set_state(WorkerState.OFFLINE, "unreachable", "connection refused (last job)")
        preps = prepare(list(fleet), Needs(kind="txt2img", checkpoint=CHECKPOINT), timeout_s=10)
        fleet.close()
    assert preps["a"].excluded is None
    assert member.state == WorkerState.ONLINE
