import gradio as gr

from gradio.events import Dependency

class InputAccordion(gr.Checkbox):
    """A hidden checkbox whose value is the accordion's open state, as in A1111 1.10.1 / Forge."""

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(**{**kwargs, "open": value})

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"