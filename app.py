"""zsc Gradio app: caption an image with a captioner trained on text only. UI only; logic lives in zsc_core.

    python app.py            # http://127.0.0.1:7860 ; weights from $ZSC_CHECKPOINTS (default: checkpoints/)
    ZSC_DTYPE=float32 python app.py  # the LM in float32 for every model (see docs/usage.md)

Named API endpoints (gradio_client): /caption, /recaption, /answer, /gap, /random_scene.

On a ZeroGPU Space (``spaces`` installed, SPACES_ZERO_GPU set) every model is loaded and placed on CUDA at import,
and only the model's work runs under ``@spaces.GPU`` (in a forked worker, for a duration sized from the request):
captioning, VQA and the gap tab's encoding. Reading uploads, ranking, drawing and t-SNE run outside. Anywhere
else the decorator is not applied. `python -m zsc_core space stage DIR` writes the folder a Space needs.
"""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
from concurrent.futures import Future

try:
    import spaces  # ZeroGPU's package; imported before torch, as its documentation asks
except ImportError:
    spaces = None

import gradio as gr

from zsc_core import display, world
from zsc_core.gap_service import GapService
from zsc_core.models import ModelCache, UserError
from zsc_core.presets import default_preset, example_rows
from zsc_core.requests import check_text, read_image
from zsc_core.service import CaptionService
from zsc_core.specs import MAX_PROMPT_CHARS, MAX_QUESTION_CHARS
from zsc_core.vqa_service import AnswerService
from zsc_core.zerogpu import gpu_seconds

MAX_UPLOAD = "20mb"
# Example outputs are cached on first click (lazily: start-up stays fast), outside the working directory.
os.environ.setdefault("GRADIO_EXAMPLES_CACHE", os.path.join(tempfile.gettempdir(), "zsc-examples-cache"))

ZERO_GPU = spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
# the LM's dtype: auto is bf16 on a GPU; on a CPU, bf16 where it computes bf16 for the models whose settings ask
# for it (photo), float32 for the others; ZSC_DTYPE names one dtype for every model
models = ModelCache(device=os.environ.get("ZSC_DEVICE") or ("cuda" if ZERO_GPU else "auto"),
                    dtype=os.environ.get("ZSC_DTYPE") or "auto")
service = CaptionService(models)
answers, gaps = AnswerService(models, service.memo), GapService(models)  # the Ask tab reads the Caption tab's caption
DEFAULT = default_preset()
# On CPU every model call runs in one compute thread (models.ComputeThread: one OpenMP team, not one per Gradio
# worker); on ZeroGPU the GPU functions run in forked workers and the rest is light, so calls run where they are.
COMPUTE = models.compute.run if not ZERO_GPU else (lambda fn, *args, **kwargs: fn(*args, **kwargs))
if ZERO_GPU:  # GPU functions run in forked workers: whatever they load lazily would be loaded again on every call
    STARTUP = Future()
    STARTUP.set_result(models.warm_up(DEFAULT))
    models.warm_all()
else:  # weights loaded once, in the compute thread, while the page is built and served; a request waits behind
    STARTUP = models.compute.start(models.warm_up, DEFAULT)  # (its result: what went wrong, "" when nothing)


def startup_problem() -> str:
    """What went wrong loading the default model at start-up ("" when nothing); waits for the load to end."""
    return STARTUP.result()


def opening_preset() -> str | None:
    """The model the page opens on once start-up is over: the default where it loaded, else the first that can
    caption here (None when none can)."""
    startup_problem()
    return models.pick(DEFAULT)


# The page is built while the default loads, for the default where its files are here; `opened` (on page load)
# corrects the model box, the start-up note and the Models tab once the load is over.
CHOICES = models.preset_choices()  # only the presets that can caption here (so far: none has failed yet)
SELECTED = models.pick(DEFAULT)
try:  # its labels and the setting it serves (CPU and GPU): the sliders start there
    LABELS, SERVED = display.labels(SELECTED or DEFAULT), service.served_config(SELECTED)
except Exception:  # its files cannot even be read: wait for the load to say why; open on one that works
    SELECTED = opening_preset()
    CHOICES = models.preset_choices()
    LABELS, SERVED = display.labels(SELECTED or DEFAULT), service.served_config(SELECTED)
DEFAULT_SAMPLES, DEFAULT_BEAMS = SERVED.decoding.samples, SERVED.decoding.num_beams


def _guard(fn):
    """Run the handler in the compute thread (COMPUTE), saying so in its progress bar while the start-up load runs
    ahead of it; turn a UserError into a message for the person, anything else into a short, generic gr.Error.
    Keeps the handler's signature (functools.wraps), so Gradio still injects its gr.Progress."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        progress = signature.bind_partial(*args, **kwargs).arguments.get("progress")
        if not STARTUP.done() and callable(progress):  # it will wait behind the start-up load
            progress(0, desc="loading the model (the server has just started)")
        try:
            return COMPUTE(fn, *args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # the app keeps serving; the log keeps the traceback
            import logging

            logging.getLogger("zsc.app").exception("request failed")
            raise gr.Error(f"Something went wrong while processing this request ({type(e).__name__}).") from None

    return wrapped


def _gpu(duration):
    """``@spaces.GPU(duration=...)`` where the package exists (ZeroGPU attaches a GPU while the function runs, in a
    forked worker), else the function as is. Only the model's work is decorated: reading uploads, ranking, drawing
    and t-SNE run outside, unbilled. ``duration`` takes the function's arguments and returns seconds."""
    def decorate(fn):
        return spaces.GPU(duration=duration)(fn) if spaces is not None else fn

    return decorate


# -- the GPU-billed functions: the model's work only; their arguments and results pickle ------------------------


def _request_seconds(request) -> int:
    """The GPU duration of a caption request: its samples and beams, the model's own where it sets none."""
    d = service.served_config(request.preset).replace(**request.settings).decoding
    return gpu_seconds(d.samples, d.num_beams, bool(request.prompt))


@_gpu(_request_seconds)
def propose(request):
    """Encode, retrieve and decode one caption request's candidates (unranked)."""
    return service.propose(request)


def _answer_seconds(image, question, preset) -> int:
    """The GPU duration of a question: the caption it may decode at the served setting (one settings read)."""
    d = service.served_config(preset).decoding
    return gpu_seconds(d.samples, d.num_beams)


@_gpu(_answer_seconds)
def answer_image(image, question, preset):
    """Caption the image once and answer the question (zero-shot VQA)."""
    return answers.answer_image(image, question, preset)


@_gpu(lambda preset, images, texts: gpu_seconds(1, 1, images=len(images)))
def gap_features(preset, images, texts):
    """Encode the gap tab's images and captions."""
    return gaps.gap_features(preset, images, texts)


# -- the handlers -------------------------------------------------------------------------------------------------


@_guard
def random_scene(seed: float):
    """A new offline-world scene and its reference captions."""
    s = world.make_scene(int(seed or 0), "eval", int.from_bytes(os.urandom(3), "little"))
    return world.render(s, 256), "\n".join(s.captions)


def _caption(request, progress):
    progress(0.2, desc="captioning")
    proposal = propose(request)
    progress(0.9, desc="ranking the candidates")
    return service.caption_view(request, proposal)


def _info(v) -> str:
    """The info line, after the warning of an image with almost nothing to see."""
    return f"**Warning:** {v.warning}\n\n{v.info}" if v.warning else v.info


@_guard
def caption(image, preset, samples, sigma2, n_cr, beams, seed, guide=None, progress=gr.Progress()):
    """Caption an image: caption, regions image, candidates table, info line, retrieved human caption, and the
    prompt's two boxes cleared (they belonged to the last prompt)."""
    v = _caption(service.caption_request(image, preset, samples, sigma2, n_cr, beams, seed, guide_weight=guide),
                 progress)
    return v.caption, v.regions_image, v.candidates, _info(v), v.retrieved, "", ""


def _recaption_outputs(v, interactive: bool):
    """What a prompted caption fills: the plain caption box (the rough caption, where a first pass wrote one), the
    retrieved caption, the rough and refined boxes, regions, candidates, info."""
    return (v.rough_caption if interactive else "", v.retrieved, v.rough_caption, v.caption, v.regions_image,
            v.candidates, _info(v))


@_guard
def example(image, prompt="", progress=gr.Progress()):
    """An example photo captioned by the default model at its served setting, re-captioned from the example's
    prompt where it has one (cached after its first click). The model box switches to that model, so every
    label names the model that captioned it."""
    preset = opening_preset()
    if prompt:
        v = _caption(service.caption_request(image, preset, prompt=prompt), progress)
        out = _recaption_outputs(v, models.refiner(preset).interactive)
        return out[0], out[4], out[5], out[6], out[1], out[2], out[3], preset
    v = _caption(service.caption_request(image, preset), progress)
    return v.caption, v.regions_image, v.candidates, _info(v), v.retrieved, "", "", preset


def opened():
    """On page load, once start-up is over (it waits for it): the start-up note, the model box (the models that
    can caption here, opened on :func:`opening_preset`) and the Models tab, which says what failed."""
    problem = startup_problem()
    note = f"**Note:** {problem} See the Models tab." if problem else ""
    return (gr.update(value=note, visible=bool(problem)),
            gr.update(choices=models.preset_choices(), value=opening_preset()),
            display.status_markdown(models.failed, models.detector_status()))


def cleared():
    """A new upload: every output that belonged to the last photo is emptied."""
    return "", "", None, None, "", "", "", "", "", "", None


def gap_inputs_shown(source):
    """The gap tab shows the settings of the chosen data only: the number of scenes, or the uploads and captions."""
    mine = source == "my images and captions"
    return gr.update(visible=source == "generated scenes"), gr.update(visible=mine), gr.update(visible=mine)


@_guard
def relabel(preset):
    """The labels and the settings that apply to the chosen model, and the setting it serves here."""
    from zsc_core.models import preset_name

    lb, served = display.labels(preset_name(preset)), service.served_config(preset)
    return (lb.header, f"**{lb.regions}**", gr.update(headers=lb.candidate_headers()),
            gr.update(visible=lb.reads_regions), gr.update(visible=lb.offline_world),
            gr.update(visible=lb.offline_world), gr.update(visible=lb.has_bank),
            gr.update(value=served.decoding.samples), gr.update(value=served.decoding.num_beams),
            gr.update(value=served.guidance.guide_weight, visible=lb.has_bank))


@_guard
def recaption(image, prompt, preset, samples, sigma2, n_cr, beams, seed, guide=None, progress=gr.Progress()):
    """Re-caption with an interactive prompt: the plain caption and the retrieved one (this photo's, refilled), the
    rough caption, the refined caption, regions, candidates, info."""
    if not check_text(prompt, "prompt", MAX_PROMPT_CHARS, required=False):
        raise UserError('The prompt is empty: type what the image contains, e.g. "An image contains motorcycle".')
    v = _caption(service.caption_request(image, preset, samples, sigma2, n_cr, beams, seed, prompt=prompt,
                                         guide_weight=guide), progress)
    return _recaption_outputs(v, models.refiner(preset).interactive)


@_guard
def answer(image, question, preset, progress=gr.Progress()):
    """Zero-shot VQA: answer, how it was answered (the evidence read, or the LM's free text), the caption it read,
    top-5 answers."""
    question = check_text(question, "question", MAX_QUESTION_CHARS)
    picture = read_image(image)
    progress(0.2, desc="answering")
    v = answer_image(picture, question, preset)
    # the caption box only where the LM read one: an answer from the evidence read none
    return v.answer, v.how, gr.update(value=v.caption, visible=bool(v.caption)), v.top


@_guard
def gap(preset, source, n, files, captions, progress=gr.Progress()):
    """Modality-gap analysis: Table-1 numbers, difference histograms, t-SNE."""
    images, texts = gaps.gap_inputs(source, n, files, captions)
    progress(0.2, desc="encoding")
    features = gap_features(preset, images, texts)
    progress(0.6, desc="running t-SNE")
    v = gaps.gap_view(features)
    return v.markdown, v.histograms, v.tsne


with gr.Blocks(title="zsc: zero-shot captioning trained on text only") as demo:
    gr.Markdown("# Zero-shot captioning, trained on text only\nMacCap and TIPCap: only the adaptor was trained, on "
                "caption text alone. Upload an image or click an example.")
    header = gr.Markdown(LABELS.header, elem_id="model-header")
    startup_note = gr.Markdown(visible=False, elem_id="startup-problem")
    with gr.Row():
        preset = gr.Dropdown(CHOICES, value=SELECTED, label="Model (the Models tab says what each knows)", scale=2)
        seed = gr.Number(value=SERVED.decoding.seed, precision=0, label="Seed", scale=1)
    with gr.Tabs():
        with gr.Tab("Caption"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"])
                    scene_btn = gr.Button("Random offline-world scene (for the offline-world models)",
                                          visible=LABELS.offline_world)
                    scene_refs = gr.Textbox(label="That scene's reference captions", lines=3, interactive=False,
                                            visible=LABELS.offline_world)
                    with gr.Accordion("Sampling settings", open=False):
                        samples = gr.Slider(1, 64, value=DEFAULT_SAMPLES, step=1, label="Samples S (reranked)")
                        # text, not gr.Number: a rendered Number field shows and sends 0 for a blank value,
                        # which turned the noise off as soon as the settings were opened
                        sigma2 = gr.Textbox(value="", label="Inference noise σ² (blank: the model's own)",
                                            placeholder="the model's own, e.g. 0.016")
                        n_cr = gr.Textbox(value="", label="Subregions N_cr (blank: the model's own)",
                                          placeholder="the model's own, e.g. 10", visible=LABELS.reads_regions)
                        beams = gr.Slider(1, 8, value=DEFAULT_BEAMS, step=1, label="Beam size per sample")
                        guide = gr.Slider(0, 0.9, value=SERVED.guidance.guide_weight, step=0.05,
                                          label="Bank guidance: weight of the nearest captions' n-grams in each "
                                                "next token (0: the LM alone)", visible=LABELS.has_bank)
                    run = gr.Button("Caption", variant="primary")
                with gr.Column(scale=1):
                    out_caption = gr.Textbox(label="Caption", interactive=False)
                    out_retrieved = gr.Textbox(label="Nearest human-written caption (retrieved from the caption "
                                                     "bank, not generated)", interactive=False,
                                               visible=LABELS.has_bank, elem_id="retrieved")
                    # the long title above the image, not as its label (the image toolbar covered the label)
                    regions_title = gr.Markdown(f"**{LABELS.regions}**", elem_id="regions-title")
                    out_regions = gr.Image(show_label=False, type="pil", elem_id="regions")
                    out_cands = gr.Dataframe(headers=LABELS.candidate_headers(), label="Sampled candidates",
                                             interactive=False, elem_id="candidates", wrap=True,
                                             column_widths=["8%", "52%", "15%", "17%", "8%"])
                    out_info = gr.Markdown(elem_id="info")
            with gr.Row():
                prompt = gr.Textbox(label="Prompt", placeholder="An image contains motorcycle", scale=3)
                rerun = gr.Button("Re-caption with the prompt", scale=1)
            with gr.Row():
                out_rough = gr.Textbox(label="Rough caption (first pass)", interactive=False)
                out_refined = gr.Textbox(label="Refined caption (with the prompt)", interactive=False)
            # Examples run on click; their outputs are cached after the first click (lazily: start-up stays fast).
            # One shows the refinement the app advertises; the failures that teach stay (the flower).
            gr.Examples(example_rows(), inputs=[image, prompt], label=f"Examples (captioned by {SELECTED})",
                        fn=example, outputs=[out_caption, out_regions, out_cands, out_info, out_retrieved,
                                             out_rough, out_refined, preset],
                        cache_examples=True, cache_mode="lazy", preprocess=False, elem_id="examples")
        with gr.Tab("Ask (VQA)"):
            gr.Markdown("Ask a question about the image in the Caption tab. Questions of existence (\"Is there a "
                        "dog?\"), counting (\"How many people are there?\"), class (\"What animal is this?\") "
                        "and colour (\"What color is the bus?\") are answered from what the photo's nearest human "
                        "captions and the face detector say; others by the language model reading the caption.")
            question = gr.Textbox(label="Question", placeholder="what color is the car?")
            ask = gr.Button("Answer", variant="primary")
            with gr.Row():
                out_answer = gr.Textbox(label="Answer", interactive=False)
                out_generated = gr.Textbox(label="How it answered", interactive=False)
            out_vqa_caption = gr.Textbox(label="The caption it read", interactive=False)
            out_top = gr.Dataframe(headers=["answer", "score"], label="Top answers", interactive=False)
        with gr.Tab("Modality gap"):
            source = gr.Radio(["COCO photos", "generated scenes", "my images and captions"], value="COCO photos",
                              label="Data (COCO photos: the 109 held-out photos with their first caption)")
            n_scenes = gr.Slider(10, 1000, value=200, step=10, label="Generated scenes", visible=False)
            gap_files = gr.File(file_count="multiple", file_types=["image"], label="Your images (3 to 64)",
                                visible=False)
            gap_caps = gr.Textbox(lines=4, label="Their captions, one per line, in order", visible=False)
            gap_btn = gr.Button("Analyse", variant="primary")
            gap_table = gr.Markdown(elem_id="gap-table")
            # titles above the figures, not as labels over them (they covered the panels' own titles)
            gr.Markdown("**Image minus text, per dimension, with the fitted Gaussian**")
            gap_hist = gr.Image(show_label=False, type="pil", elem_id="gap-hist")
            gr.Markdown("**t-SNE: raw, isotropic noise, multivariate mapping**")
            gap_tsne = gr.Image(show_label=False, type="pil", elem_id="gap-tsne")
        with gr.Tab("Models"):
            models_tab = gr.Markdown(display.status_markdown(models.failed, {}), elem_id="models-tab")

    demo.load(opened, outputs=[startup_note, preset, models_tab], api_name="opened")
    settings = [samples, sigma2, n_cr, beams, seed, guide]
    # preprocess=False: uploads reach zsc_core's own image loader untouched, so a broken or odd file gets a clear
    # message from it (Gradio's own decoding would fail first, with a generic error).
    scene_btn.click(random_scene, inputs=seed, outputs=[image, scene_refs], api_name="random_scene")
    preset.change(relabel, inputs=preset, outputs=[header, regions_title, out_cands, n_cr, scene_btn, scene_refs,
                                                   out_retrieved, samples, beams, guide], api_name="labels")
    photo_outputs = [out_caption, out_retrieved, out_regions, out_cands, out_info, out_rough, out_refined,
                     out_answer, out_generated, out_vqa_caption, out_top]
    # a new upload: nothing of the last photo stays
    image.input(cleared, outputs=photo_outputs, api_name="clear", api_visibility="private")
    source.change(gap_inputs_shown, inputs=source, outputs=[n_scenes, gap_files, gap_caps], api_name="gap_inputs",
                  api_visibility="private")
    # Each request first clears the info line in the browser, so a failed one never leaves the last one's there.
    run.click(None, js="() => ''", outputs=out_info).then(
        caption, inputs=[image, preset] + settings,
        outputs=[out_caption, out_regions, out_cands, out_info, out_retrieved, out_rough, out_refined],
        api_name="caption", preprocess=False)
    rerun.click(None, js="() => ''", outputs=out_info).then(recaption, inputs=[image, prompt, preset] + settings,
                outputs=[out_caption, out_retrieved, out_rough, out_refined, out_regions, out_cands, out_info],
                api_name="recaption", preprocess=False)
    ask.click(answer, inputs=[image, question, preset], outputs=[out_answer, out_generated, out_vqa_caption, out_top],
              api_name="answer", preprocess=False)
    gap_btn.click(gap, inputs=[preset, source, n_scenes, gap_files, gap_caps], outputs=[gap_table, gap_hist, gap_tsne],
                  api_name="gap", preprocess=False)

demo.queue(max_size=32, default_concurrency_limit=1)

if __name__ == "__main__":
    demo.launch(max_file_size=MAX_UPLOAD)
