"""Modality-gap and retrieval statistics (pure functions on embeddings; plots come with the gap CLI)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def retrieval_recall(sim: torch.Tensor, image_of_text: torch.Tensor, k: int = 1) -> tuple[float, float]:
    """COCO-style R@k from an (N_img, N_txt) similarity matrix; ``image_of_text[j]`` is caption j's image.

    Image->text: an image counts if any of its captions is in its top k. Text->image: per caption.
    """
    topk_txt = sim.topk(k, dim=1).indices  # (N_img, k)
    i2t = (image_of_text[topk_txt] == torch.arange(sim.shape[0])[:, None]).any(1).float().mean().item()
    topk_img = sim.topk(k, dim=0).indices  # (k, N_txt)
    t2i = (topk_img == image_of_text[None]).any(0).float().mean().item()
    return i2t, t2i


def _mean_offdiag(x: torch.Tensor) -> float:
    s = x @ x.T
    n = len(x)
    return ((s.sum() - s.diagonal().sum()) / (n * (n - 1))).item()


def gap_stats(image: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """The modality gap of matched pairs (row i of ``image`` with row i of ``text``), all L2-normalised.

    ``paired_cos``: mean cosine of matched image-text pairs; ``image_image_cos`` / ``text_text_cos``: mean
    cosine between different items within one modality; ``centroid_distance``: the distance between the two
    modalities' mean embeddings (the gap vector's length). A gap is visible when matched pairs are *less*
    similar than unrelated items of the same modality.
    """
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    paired = (image * text).sum(-1)
    return {
        "paired_cos_mean": paired.mean().item(),
        "paired_cos_max": paired.max().item(),
        "paired_cos_min": paired.min().item(),
        "image_image_cos": _mean_offdiag(image),
        "text_text_cos": _mean_offdiag(text),
        "centroid_distance": (image.mean(0) - text.mean(0)).norm().item(),
    }


def subregion_share(global_feat: torch.Tensor, sub_feats: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
    """How often some subregion is closer to the caption than the global feature (MacCap: 33% on COCO).

    global_feat: (N, D); sub_feats: (N, N_cr, D); text: (N, D) the paired captions; all L2-normalised.
    Also the mean/max/min cosine of the best subregion per pair (MacCap Table 1's augmented column).
    """
    g = (global_feat * text).sum(-1)  # (N,)
    best = (sub_feats * text[:, None]).sum(-1).max(1).values  # (N,)
    return {"share_subregion_closer": (best > g).float().mean().item(), "global_cos_mean": g.mean().item(),
            "best_subregion_cos_mean": best.mean().item(), "best_subregion_cos_max": best.max().item(),
            "best_subregion_cos_min": best.min().item()}


# ---------------------------------------------------------------------------------------------------------
# Figures (matplotlib Figure objects; no pyplot state, no backend switching).


def difference_histograms(diffs: dict[str, torch.Tensor], dims: tuple[int, ...] = (0, 1, 2), bins: int = 60):
    """MacCap Fig. 1 / TIPCap Fig. 5: histograms of image-minus-text differences with the fitted Gaussian.

    ``diffs`` maps a row label ("global", "subregion") to (N, D) differences. Each row shows the pooled
    differences of all dimensions, then the chosen dimensions; each panel draws N(mean, std) over the bars.
    """
    import numpy as np
    from matplotlib.figure import Figure

    cols = 1 + len(dims)
    fig = Figure(figsize=(3.2 * cols, 2.6 * len(diffs)), layout="constrained")
    axes = fig.subplots(len(diffs), cols, squeeze=False)
    for r, (label, d) in enumerate(diffs.items()):
        d = d.detach().float().cpu()
        panels = [("all dimensions", d.flatten())] + [(f"dimension {k}", d[:, k]) for k in dims]
        for c, (title, x) in enumerate(panels):
            ax = axes[r][c]
            x = x.numpy()
            ax.hist(x, bins=bins, density=True, color="#4c78a8", alpha=0.75)
            mu, sd = float(x.mean()), float(x.std()) or 1e-6
            grid = np.linspace(x.min(), x.max(), 200)
            ax.plot(grid, np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color="#e45756")
            ax.set_title(f"{label}: {title}\nmean {mu:+.3f}, std {sd:.3f}", fontsize=8)
            ax.tick_params(labelsize=7)
    return fig


def tsne_points(groups: dict[str, torch.Tensor], perplexity: float = 30.0, max_iter: int = 500, seed: int = 0):
    """2-D t-SNE of several embedding groups together; returns {label: (n, 2) array}. perplexity < n."""
    import numpy as np
    from sklearn.manifold import TSNE

    arrays = [g.detach().float().cpu().numpy() for g in groups.values()]
    x = np.concatenate(arrays)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    y = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, init="pca", random_state=seed).fit_transform(x)
    out, i = {}, 0
    for label, a in zip(groups, arrays):
        out[label] = y[i:i + len(a)]
        i += len(a)
    return out


def tsne_figure(panels: dict[str, dict[str, torch.Tensor]], **tsne_kw):
    """TIPCap Fig. 6: one t-SNE panel per entry (e.g. raw / isotropic noise / mapping module), each a dict of
    labelled embedding groups (e.g. {"image": ..., "text": ...})."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = ["#4c78a8", "#e45756", "#54a24b", "#f58518"]
    for ax, (title, groups) in zip(axes, panels.items()):
        pts = tsne_points(groups, **tsne_kw)
        for (label, p), col in zip(pts.items(), colors):
            ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.7, color=col, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, markerscale=2)
    return fig


ENCODE_BATCH = 8  # images per CNN/ViT forward in the gap analysis


@dataclass
class GapReport:
    table: dict  # MacCap Table 1 numbers: global and subregion-augmented cosines, subregion share, gap stats
    histograms: object  # matplotlib Figure
    tsne: object  # matplotlib Figure


@torch.no_grad()
def global_and_subregion_features(clip, images, n_cr: int = 10,
                                   batch: int = ENCODE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Global features I_c (N, D) and subregion features I_cr (N, n_cr, D) of PIL images, on CPU. In batches of
    ``batch``: a CNN's activations at 224 px for all 109 COCO photos at once took the app's peak memory past 3 GB
    (the photo bridge on the COCO photos: +0.50 GB peak at 32 a batch, +0.27 GB at 8, and no slower)."""
    from . import regions

    glob, sub = [], []
    for i in range(0, len(images), batch):
        f = clip.image_features(clip.pixels(images[i:i + batch]))
        glob.append(f.global_feat.float().cpu())
        sub.append(regions.subregions(f.attention, f.tokens, f.global_feat, n_cr).feats.float().cpu())
    return torch.cat(glob), torch.cat(sub)


@torch.no_grad()
def gap_report(clip, images, captions: list[str], n_cr: int = 10, sigma2: float = 0.016,
               mapping: tuple[torch.Tensor, torch.Tensor] | dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
               tsne_n: int = 300, seed: int = 0, dims: tuple[int, ...] = (0, 1, 2), tsne_iter: int = 500) -> GapReport:
    """The modality-gap analysis of images paired with captions (one caption per image).

    ``mapping`` is a TIPCap (mu, L), or several by name (one t-SNE panel each); without one, N(mu, Sigma) is
    fitted on these very pairs (what setting 1 would estimate), so the t-SNE shows what a multivariate mapping does
    to the text features. For the raw text, the isotropic noise and each mapping, ``table["mapped_paired_cos"]``
    gives the mean cosine between a mapped caption and its own image (noise lowers it), and
    ``table["mapped_centroid_distance"]`` the distance between the mapped captions' and the images' mean
    embeddings: how far each mapping moves the text distribution onto the images'.
    """
    return gap_report_from(*gap_features(clip, images, captions, n_cr), sigma2=sigma2, mapping=mapping,
                           tsne_n=tsne_n, seed=seed, dims=dims, tsne_iter=tsne_iter)


def gap_features(clip, images, captions: list[str], n_cr: int = 10
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's half of :func:`gap_report` (what a GPU runs): global (N, D), subregion (N, n_cr, D) and
    caption (N, D) features, on the CPU."""
    if len(images) != len(captions) or len(images) < 3:
        raise ValueError("need at least 3 images, each with one caption")
    glob, sub = global_and_subregion_features(clip, images, n_cr)
    return glob, sub, clip.encode_text(captions).float().cpu()


def gap_report_from(glob: torch.Tensor, sub: torch.Tensor, text: torch.Tensor, sigma2: float = 0.016,
                    mapping: tuple[torch.Tensor, torch.Tensor] | dict[str, tuple[torch.Tensor, torch.Tensor]] | None
                    = None, tsne_n: int = 300, seed: int = 0, dims: tuple[int, ...] = (0, 1, 2),
                    tsne_iter: int = 500) -> GapReport:
    """The CPU half of :func:`gap_report`: statistics, histograms and t-SNE from :func:`gap_features`."""
    from . import gap as gapmath

    table = {"n_pairs": len(glob), "global": gap_stats(glob, text), **subregion_share(glob, sub, text)}
    best = sub[torch.arange(len(sub)), (sub * text[:, None]).sum(-1).argmax(1)]  # best subregion per pair
    table["subregion"] = gap_stats(best, text)
    hist = difference_histograms({"global": glob - text, "subregion": best - text}, dims=dims)
    if mapping is None:
        mapping = {"multivariate mapping N(mu, Sigma)": gapmath.estimate_paired(glob, text, shrinkage=0.2)}
    elif not isinstance(mapping, dict):
        mapping = {"multivariate mapping N(mu, Sigma)": mapping}
    g = torch.Generator().manual_seed(seed)
    iso_name = f"isotropic noise (sigma2={sigma2})"
    moved = {"raw": text, iso_name: F.normalize(text + torch.randn(text.shape, generator=g) * sigma2 ** 0.5, dim=-1)}
    for name, (mu, L) in mapping.items():
        moved[name] = F.normalize(text + gapmath.sample_gaussian(mu.float().cpu(), L.float().cpu(), (len(text),), g),
                                  dim=-1)
    table["mapped_paired_cos"] = {name: (t * glob).sum(-1).mean().item() for name, t in moved.items()}
    table["mapped_centroid_distance"] = {name: (t.mean(0) - glob.mean(0)).norm().item() for name, t in moved.items()}
    k = min(tsne_n, len(glob))
    panels = {"raw": {"image": glob[:k], "text": text[:k]},
              iso_name: {"image": glob[:k], "text + noise": moved[iso_name][:k]}}
    panels |= {name: {"image": glob[:k], "mapped text": moved[name][:k]} for name in mapping}
    return GapReport(table, hist, tsne_figure(panels, max_iter=tsne_iter, seed=seed))
