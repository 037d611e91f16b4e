"""The webui adapter: the only part of the project that imports the webui's `modules` and gradio."""
