from typing import Any

from modules import errors

AlwaysVisible = object()


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptRunner:
    """Runs hooks of always-on scripts with their slice of p.script_args; a hook's exception is reported, as in
    the webui, not raised."""

    def __init__(self) -> None:
        self.alwayson_scripts: list[Script] = []
        self.inputs: list[Any] = [None]

    def add(self, script: Script, args: list[Any], is_img2img: bool = False) -> None:
        script.is_img2img = is_img2img
        script.alwayson = True
        script.args_from = len(self.inputs)
        self.inputs.extend(args)
        script.args_to = len(self.inputs)
        script.name = script.title().lower()
        self.alwayson_scripts.append(script)

    def _run(self, hook: str, p, *args, **kwargs) -> None:
        for script in self.alwayson_scripts:
            if getattr(type(script), hook) is getattr(Script, hook):
                continue
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                if hook == "postprocess_batch":
                    getattr(script, hook)(p, *script_args, images=args[0], **kwargs)
                else:
                    getattr(script, hook)(p, *args, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._run("before_process", p)

    def process(self, p):
        self._run("process", p)

    def before_process_batch(self, p, **kwargs):
        self._run("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._run("process_batch", p, **kwargs)

    def postprocess_batch(self, p, images, **kwargs):
        self._run("postprocess_batch", p, images, **kwargs)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs):
        self._run("postprocess_batch_list", p, pp, **kwargs)

    def postprocess(self, p, processed):
        self._run("postprocess", p, processed)
