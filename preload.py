"""The --distributed-* flags. The webui hands its argparse parser in before parsing the command line.

papuSpartan/stable-diffusion-webui-distributed defines the same flags: install one of the two, not both.
"""

import argparse


def preload(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed")
    group.add_argument(
        "--distributed-remotes",
        type=str,
        default=None,
        help="workers as NAME:HOST:PORT[,NAME:https://HOST:PORT,...], added to workers.json's",
    )
    group.add_argument(
        "--distributed-skip-verify-remotes",
        action="store_true",
        help="do not verify workers' TLS certificates (a worker's verify_tls in workers.json still wins)",
    )
    group.add_argument(
        "--distributed-remotes-autosave",
        action="store_true",
        help="save the workers' images into this webui's outputs even when it saves none itself (API calls)",
    )
    group.add_argument("--distributed-debug", action="store_true", help="log every request and state change")
    group.add_argument(
        "--distributed-config",
        type=str,
        default=None,
        help="path of workers.json (default: workers.json in the extension's folder)",
    )
