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
    # A1111 1.10.1's defaults of the other options the master carries to workers (webui/fields.py)
    emphasis="Original",
    eta_ancestral=1.0,
    eta_ddim=0.0,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=0.0,
    s_noise=1.0,
    img2img_fix_steps=False,
    pad_cond_uncond=False,
    pad_cond_uncond_v0=False,
    always_discard_next_to_last_sigma=False,
    sgm_noise_multiplier=False,
    use_old_scheduling=False,
    use_old_emphasis_implementation=False,
    sigma_min=0.0,
    sigma_max=0.0,
    rho=0.0,
    comma_padding_backtrack=20,
    img2img_extra_noise=0.0,
    skip_early_cond=0.0,
    s_min_uncond_all=False,
)
state = State()
sd_model = SimpleNamespace(
    sd_checkpoint_info=SimpleNamespace(title="tiny [0000000000]", model_name="tiny", shorthash=None, sha256=None),
    sd_model_hash=None,
)
