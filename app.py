"""zsc Gradio app: caption an image with a captioner trained on text only. UI only; logic lives in zsc_core."""

from __future__ import annotations

import os

import gradio as gr

from zsc_core import world
from zsc_core.presets import DEFAULT_PRESET
from zsc_core.service import CaptionService, UserError

service = CaptionService()
MAX_UPLOAD = "20mb"


def _examples() -> list[str]:
    """Packaged real photos (scikit-learn ships two) and two offline-world scenes, written once to a temp dir."""
    import tempfile

    from sklearn.datasets import load_sample_image
    from PIL import Image

    d = os.path.join(tempfile.gettempdir(), "zsc-examples")
    os.makedirs(d, exist_ok=True)
    paths = []
    for i in (0, 3):
        p = os.path.join(d, f"world_eval_{i}.png")
        if not os.path.exists(p):
            world.render(world.make_scene(0, "eval", i), 256).save(p)
        paths.append(p)
    for name in ("china.jpg", "flower.jpg"):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            Image.fromarray(load_sample_image(name)).save(p)
        paths.append(p)
    return paths


def random_scene(seed: float):
    s = world.make_scene(int(seed or 0), "eval", int.from_bytes(os.urandom(2), "little"))
    return world.render(s, 256), "; ".join(s.captions[:2])


def caption(image, preset, samples, sigma2, n_cr, beams, seed, progress=gr.Progress()):
    progress(0.1, desc="captioning")
    try:
        v = service.caption(image, preset, samples, sigma2, n_cr, beams, seed)
    except UserError as e:
        raise gr.Error(str(e)) from None
    return v.caption, v.regions_image, v.candidates, v.info


with gr.Blocks(title="zsc: zero-shot captioning trained on text only") as demo:
    gr.Markdown("# Zero-shot captioning, trained on text only\nA frozen CLIP, a small adaptor trained on caption "
                "text alone, and a frozen language model (MacCap). Upload an image or pick an example.")
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"])
            gr.Examples(_examples(), inputs=image)
            with gr.Row():
                scene_btn = gr.Button("Random offline-world scene")
            scene_refs = gr.Textbox(label="That scene's reference captions", interactive=False)
            preset = gr.Dropdown(service.preset_choices(), value=DEFAULT_PRESET, label="Model")
            with gr.Accordion("Sampling settings", open=False):
                samples = gr.Slider(1, 64, value=20, step=1, label="Samples S (reranked by CLIP)")
                sigma2 = gr.Number(value=0.016, label="Inference noise σ²", minimum=0, maximum=1)
                n_cr = gr.Slider(1, 32, value=10, step=1, label="Subregions N_cr")
                beams = gr.Slider(1, 8, value=1, step=1, label="Beam size")
                seed = gr.Number(value=0, precision=0, label="Seed")
            run = gr.Button("Caption", variant="primary")
        with gr.Column(scale=1):
            out_caption = gr.Textbox(label="Caption", interactive=False)
            out_regions = gr.Image(label="Top attention subregions (numbered by CLS attention)", type="pil")
            out_cands = gr.Dataframe(headers=["chosen", "candidate", "CLIP score", "count"], label="Candidates",
                                     interactive=False)
            out_info = gr.Markdown()
    gr.Markdown("### Models\n" + service.status_markdown())
    scene_btn.click(random_scene, inputs=seed, outputs=[image, scene_refs], api_name="random_scene")
    run.click(caption, inputs=[image, preset, samples, sigma2, n_cr, beams, seed],
              outputs=[out_caption, out_regions, out_cands, out_info], api_name="caption")

demo.queue(max_size=32, default_concurrency_limit=1)

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_UPLOAD)
