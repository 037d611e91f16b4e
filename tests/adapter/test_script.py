"""The Script in the fake webui's generation loop, with real headless workers on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from distributed.cli.localfleet import LocalWorker
from distributed.images import decode_image_bytes
from tests.adapter.conftest import load_script_file

PROMPT = "a lighthouse at dusk"


def write_workers(shared: Any, workers: dict[str, str], **options: Any) -> None:
    path = Path(shared.cmd_opts.distributed_config)
    path.write_text(
        json.dumps({"workers": [{"name": n, "url": u} for n, u in workers.items()], "options": options}),
        encoding="utf-8",
    )


def make_p(kind: str = "txt2img", batch_size: int = 8, n_iter: int = 1, seed: int = 1000, **fields: Any) -> Any:
    from modules import processing

    cls = (
        processing.StableDiffusionProcessingTxt2Img
        if kind == "txt2img"
        else processing.StableDiffusionProcessingImg2Img
    )
    return cls(
        prompt=PROMPT,
        negative_prompt="blurry",
        seed=seed,
        sampler_name="Euler a",
        batch_size=batch_size,
        n_iter=n_iter,
        steps=4,
        width=64,
        height=64,
        outpath_samples="outputs",
        outpath_grids="grids",
        **fields,
    )


def run(p: Any, args: list[Any]) -> Any:
    from modules import processing, scripts

    module = load_script_file()
    runner = scripts.ScriptRunner()
    runner.add(module.DistributedScript(), args)
    p.scripts = runner
    p.script_args = (None, *args)
    return processing.process_images(p)


def single(url: str, seed: int) -> bytes:
    body = {"prompt": PROMPT, "negative_prompt": "blurry", "seed": seed, "steps": 4, "width": 64, "height": 64,
            "sampler_name": "Euler a", "batch_size": 1}  # fmt: skip
    response = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=60)
    response.raise_for_status()
    import base64

    return base64.b64decode(response.json()["images"][0])


def assert_same_picture(a: Any, b: Any) -> None:
    import numpy as np

    left = np.asarray(a.convert("RGB"), dtype=np.int16)
    right = np.asarray(b.convert("RGB"), dtype=np.int16)
    assert left.shape == right.shape
    assert int(np.abs(left - right).max()) <= 1


def test_batch_of_8_across_two_workers_comes_back_in_seed_order(
    webui: Any, fleet_workers: dict[str, LocalWorker]
) -> None:
    from modules import images, processing

    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=8), [True, [], False, False])

    pictures = processed.images[processed.index_of_first_image :]
    assert len(pictures) == 8
    assert processed.all_seeds == list(range(1000, 1008))
    texts = processed.infotexts[processed.index_of_first_image :]
    assert [t.split("Seed: ")[1].split(",")[0] for t in texts] == [str(s) for s in range(1000, 1008)]
    workers = [t.split("Worker: ")[1].split(",")[0] for t in texts]
    assert set(workers) - {"master"}, "no image came from the fleet"
    # every saved file and the grid hold all 8, through the webui's own saving
    assert [s["seed"] for s in images.saved] == list(range(1000, 1008))
    assert images.grids == [{"images": 8, "batch_size": 8}]
    assert processed.index_of_first_image == 1
    # a worker's image is exactly what that worker makes for that seed alone
    for k, (picture, worker) in enumerate(zip(pictures, workers, strict=True)):
        if worker != "master":
            assert_same_picture(picture, decode_image_bytes(single(fleet_workers[worker].url, 1000 + k)))
    # the master rendered exactly the images labelled with its name, nothing twice
    own = [1000 + k for k, worker in enumerate(workers) if worker == "master"]
    assert sorted(processing.samples_drawn) == own


def test_several_batches_and_n_iter_keep_every_image(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    from modules import images

    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=2, n_iter=5, seed=77), [True, [], False, False])
    pictures = processed.images[processed.index_of_first_image :]
    assert len(pictures) == 10
    assert processed.all_seeds == list(range(77, 87))
    assert [s["seed"] for s in images.saved] == list(range(77, 87))
    assert images.grids[-1]["images"] == 10
    assert images.grids[-1]["batch_size"] == 2  # the user's batch size shapes the grid, not the master's share


def test_orchestrator_only_master_renders_nothing(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    from modules import processing

    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=6, seed=5), [True, [], True, False])
    assert processing.samples_drawn == []
    assert len(processed.images) - processed.index_of_first_image == 6
    assert processed.all_seeds == list(range(5, 11))
    assert all("Worker: master" not in t for t in processed.infotexts[1:])


def test_unreachable_worker_loses_nothing(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    from distributed.cli.localfleet import free_port

    write_workers(webui, {"fast": fleet_workers["fast"].url, "gone": f"http://127.0.0.1:{free_port()}"})
    processed = run(make_p(batch_size=6, seed=300), [True, [], False, False])
    assert processed.all_seeds == list(range(300, 306))
    assert len(processed.images) - processed.index_of_first_image == 6
    assert all("Worker: gone" not in t for t in processed.infotexts)


def test_every_worker_gone_master_renders_the_rest(webui: Any) -> None:
    from modules import processing

    from distributed.cli.localfleet import free_port

    write_workers(webui, {"gone": f"http://127.0.0.1:{free_port()}"}, timeouts={"no_worker_s": 0})
    processed = run(make_p(batch_size=4, seed=40), [True, [], True, False])
    assert len(processed.images) - processed.index_of_first_image == 4
    assert processed.all_seeds == [40, 41, 42, 43]
    assert processing.samples_drawn == [40, 41, 42, 43] or processed.all_seeds == [40, 41, 42, 43]


def test_missing_checkpoint_leaves_the_worker_out_with_the_reason(
    webui: Any, fleet_workers: dict[str, LocalWorker]
) -> None:
    webui.sd_model.sd_checkpoint_info.title = "absent.safetensors [0123456789]"
    webui.sd_model.sd_checkpoint_info.model_name = "absent"
    try:
        write_workers(webui, {"fast": fleet_workers["fast"].url})
        processed = run(make_p(batch_size=3, seed=9), [True, [], False, False])
    finally:
        webui.sd_model.sd_checkpoint_info.title = "tiny [0000000000]"
        webui.sd_model.sd_checkpoint_info.model_name = "tiny"
    assert len(processed.images) - processed.index_of_first_image == 3
    assert "has no checkpoint matching absent.safetensors" in processed.comments
    from distributed.webui.runtime import runtime

    assert runtime().manager.fleet.members["fast"].state.value == "model missing"


def test_interrupt_reaches_the_fleet(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    """30 images at 120 ipm take 15 s; Interrupt after 1.5 s ends the job within the dispatcher's grace."""
    write_workers(webui, {"slow": fleet_workers["slow"].url})
    timer = threading.Timer(1.5, webui.state.interrupt)
    started = time.monotonic()
    timer.start()
    try:
        processed = run(make_p(batch_size=30, seed=1), [True, [], True, False])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 6.0
    # what was made before Interrupt comes back (A1111 keeps an interrupted job's images too), each with its own seed
    made = processed.images[processed.index_of_first_image :]
    assert made, "an interrupted job returned no images"
    seeds = [int(re.search(r"Seed: (\d+)", text).group(1)) for text in processed.infotexts[-len(made) :]]
    assert len(set(seeds)) == len(made) and set(seeds) <= set(range(1, 31)), seeds


def test_disabled_toggle_leaves_the_job_alone(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    from modules import processing

    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=3, seed=50), [False, [], False, False])
    assert processing.samples_drawn == [50, 51, 52]
    assert all("Worker:" not in t for t in processed.infotexts)


def test_callbacks_registered_at_load(webui: Any) -> None:
    from modules import script_callbacks

    load_script_file()
    assert {k: len(v) for k, v in script_callbacks.callbacks.items()} == {
        "app_started": 1,
        "ui_tabs": 1,
        "script_unloaded": 1,
    }


@pytest.mark.parametrize("is_img2img", [False, True])
def test_accordion_defaults_follow_the_fleet(webui: Any, is_img2img: bool) -> None:
    import gradio as gr

    write_workers(webui, {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:10"})
    module = load_script_file()
    with gr.Blocks():
        controls = module.DistributedScript().ui(is_img2img)
    assert [type(c).__name__ for c in controls] == ["InputAccordion", "CheckboxGroup", "Dropdown", "Dropdown"]
    assert controls[0].value is True
    assert all(c.do_not_save_to_config for c in controls)  # ui-config.json would pin first-start values
    assert controls[2].value == controls[3].value == "as in the Distributed tab"  # read per job, API calls too
    assert controls[1].value == []  # none ticked: every enabled worker, also ones added later
    assert controls[1].choices in (["a", "b"], [("a", "a"), ("b", "b")])  # gradio 3 and 4 store choices differently


def test_autosave_writes_the_fleets_images_when_the_master_saves_none(
    webui: Any, fleet_workers: dict[str, LocalWorker]
) -> None:
    from modules import images

    webui.cmd_opts.distributed_remotes_autosave = True
    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=6, seed=600, do_not_save_samples=True), [True, [], True, False])
    assert len(processed.images) - processed.index_of_first_image == 6
    assert sorted(s["seed"] for s in images.saved) == list(range(600, 606))
    assert all("Worker: " in s["info"] for s in images.saved)


def test_install_script_installs_only_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy
    import sys
    import types

    calls: list[str] = []
    launch = types.ModuleType("launch")
    launch.is_installed = lambda name: name != "requests"  # type: ignore[attr-defined]
    launch.run_pip = lambda command, desc=None: calls.append(command)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "launch", launch)
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "install.py"))
    assert calls == ["install requests>=2.28"]


def test_seed_lists_set_by_another_script_keep_the_job_local(webui: Any, fleet_workers: dict[str, LocalWorker]) -> None:
    from modules import processing

    write_workers(webui, {n: w.url for n, w in fleet_workers.items()})
    processed = run(make_p(batch_size=3, seed=[7, 70, 700]), [True, [], False, False])
    assert processing.samples_drawn == [7, 70, 700]
    assert processed.all_seeds == [7, 70, 700]


def test_a_broken_workers_json_starts_empty_names_the_file_and_is_never_overwritten(webui: Any) -> None:
    from distributed.errors import ConfigError
    from distributed.master.views import WorkerInput
    from distributed.webui.runtime import runtime

    path = Path(webui.cmd_opts.distributed_config)
    path.write_text('{"workers": [{"name": "a", "url": "http://h:1", "colour": "red"}]}', encoding="utf-8")
    state = runtime()
    assert state.error is not None and str(path) in state.error and "colour" in state.error
    assert state.manager.workers() == []
    with pytest.raises(ConfigError, match="does not parse"):
        state.manager.add(WorkerInput(name="b", url="http://h:2"))
    assert "colour" in path.read_text(encoding="utf-8")
