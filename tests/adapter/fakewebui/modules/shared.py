import argparse
from types import SimpleNamespace

from modules.shared_state import State

cmd_opts = argparse.Namespace(
    api=False,
    nowebui=False,
    port=None,
    tls_keyfile=None,
    api_auth=None,
    distributed_remotes=None,
    distributed_skip_verify_remotes=False,
    distributed_remotes_autosave=False,
    distributed_debug=False,
    distributed_config=None,
)


class Options(SimpleNamespace):
    pass


opts = Options(
    samples_format="png",
    return_grid=True,
    grid_save=True,
    grid_only_if_multiple=True,
    enable_pnginfo=True,
    samples_save=True,
    save_incomplete_images=False,
    CLIP_stop_at_last_layers=1,
    eta_noise_seed_delta=0,
    randn_source="GPU",
)
state = State()
sd_model = SimpleNamespace(
    sd_checkpoint_info=SimpleNamespace(title="tiny [0000000000]", model_name="tiny", shorthash=None, sha256=None),
    sd_model_hash=None,
)
