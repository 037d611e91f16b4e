"""Run by the webui in a subprocess at start (unless --skip-install): install only what the webui lacks.

The extension needs requests, Pillow and pydantic, which every A1111 and Forge install already has. This never
installs or upgrades torch, gradio, pydantic or fastapi: the webui pins those.
"""

import launch

NEEDED = {"requests": "requests>=2.28", "PIL": "Pillow>=9.5"}  # import name -> pip requirement

for module, requirement in NEEDED.items():
    if not launch.is_installed(module):
        launch.run_pip(f"install {requirement}", f"{requirement} for distributed")
