"""Modality-gap math: noise injection, Gaussian fitting and sampling, and the training losses.

All pure functions on tensors, seeded through an explicit ``torch.Generator``.

Text-only training replaces the image feature by a text feature plus noise, so that the adaptor learns to
read features that sit anywhere near the text feature, including where the image features of the same
content lie (the modality gap). MacCap uses isotropic noise N(0, sigma^2 I) on several copies ("region noise
injection"); TIPCap models the image-minus-text difference as a full-covariance Gaussian N(mu, Sigma).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def inject_noise(feat: torch.Tensor, n_repeat: int, sigma2: float, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """MacCap region noise injection (eq. 2-4): repeat, add N(0, sigma2) per dimension, L2-normalise.

    ``feat`` (B, D) is repeated ``n_repeat`` times to (B, n_repeat, D); a (B, n, D) input is used as is (its
    tokens are already distinct, as the subregion features I_cr at inference). Each copy gets its own noise.

    Note the scale: with D = 512 and sigma2 = 0.016 the noise vector has norm sqrt(512 * 0.016) ~ 2.9, larger
    than the unit feature it is added to. That is the paper's setting; it works because the adaptor reads
    n_repeat independent noisy copies and the noise averages out across them. Keep sigma2 configurable.
    """
    x = feat[:, None, :].expand(-1, n_repeat, -1) if feat.dim() == 2 else feat
    if sigma2 > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * math.sqrt(sigma2)
        x = x + noise
    return F.normalize(x, dim=-1)


def per_image(n_images: int, seed: int, draw, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Draw each image's random rows from its own generator seeded with ``seed``, and stack them image-major.

    ``draw(i, generator)`` returns image ``i``'s tensors (a tuple, each with that image's rows first). A photo's
    noise, and so its caption, is a function of the photo, the settings and the seed: never of the other photos in
    its batch or of its place there (one generator over the batch would hand image 2 the draws that image 1 left)."""
    parts = [draw(i, torch.Generator(device=device).manual_seed(seed)) for i in range(n_images)]
    return tuple(torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))) if parts else ()


def fit_gaussian(diffs: torch.Tensor, shrinkage: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of row samples ``diffs`` (N, D), unbiased (N - 1).

    ``shrinkage`` in [0, 1] blends the covariance towards its diagonal mean (Ledoit-Wolf style), which keeps
    it positive definite when N is small against D (TIPCap's setting 1 fits on a few pairs).
    """
    mu = diffs.mean(0)
    x = diffs - mu
    cov = x.T @ x / max(1, diffs.shape[0] - 1)
    if shrinkage > 0:
        target = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device) * cov.diagonal().mean()
        cov = (1 - shrinkage) * cov + shrinkage * target
    return mu, cov


def cholesky_factor(cov: torch.Tensor, jitter: float = 1e-6) -> torch.Tensor:
    """Lower-triangular L with L L^T = cov (+ jitter I, raised tenfold until the factorisation succeeds)."""
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    j = jitter
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(cov + j * eye)
        if int(info) == 0:
            return L
        j *= 10
    raise ValueError("covariance is not positive definite even with jitter")


def sample_gaussian(mu: torch.Tensor, L: torch.Tensor, shape: tuple[int, ...],
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised samples mu + z L^T, z ~ N(0, I): differentiable in mu and L. Returns (*shape, D)."""
    z = torch.randn(*shape, mu.shape[-1], generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + z @ L.T


def kl_to_standard_normal(mu: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, L L^T) || N(0, I) ) = 1/2 (tr(Sigma) + mu.mu - D - log det Sigma)."""
    d = mu.shape[-1]
    trace = (L * L).sum()
    logdet = 2 * torch.log(L.diagonal().abs().clamp_min(1e-12)).sum()
    return 0.5 * (trace + mu @ mu - d - logdet)


def kl_gaussians(mu_q: torch.Tensor, cov_q: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """KL( N(mu_q, cov_q) || N(mu_p, cov_p) ) for full covariances."""
    d = mu_q.shape[-1]
    lp = torch.linalg.cholesky(cov_p)
    inv_p = torch.cholesky_inverse(lp)
    diff = mu_p - mu_q
    logdet_p = 2 * torch.log(lp.diagonal()).sum()
    logdet_q = torch.linalg.slogdet(cov_q)[1]
    return 0.5 * (torch.trace(inv_p @ cov_q) + diff @ inv_p @ diff - d + logdet_p - logdet_q)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(pred_i, target_i)."""
    return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """InfoNCE of a_i against all b_j (positives on the diagonal), temperature ``tau``, one direction."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau  # (N, N)
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def relational_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """KL between the row-softmaxed cosine-similarity matrices of two feature sets (teacher detached).

    TIPCap's S4 uses it to keep the mapped features' relations (student) like the text features' (teacher).
    """
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher, dim=-1).detach()
    log_p_s = F.log_softmax(s @ s.T / tau, dim=-1)
    p_t = F.softmax(t @ t.T / tau, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean")


# ---------------------------------------------------------------------------------------------------------
# TIPCap: estimating N(mu, Sigma) of the image-minus-text difference under each data setting.


def estimate_paired(image: torch.Tensor, text: torch.Tensor, shrinkage: float = 0.1
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Setting 1 (a few paired images and captions): mu, L of the differences I - T. Returns (mu, L)."""
    mu, cov = fit_gaussian(image - text, shrinkage)
    return mu, cholesky_factor(cov)


def estimate_web(image_web: torch.Tensor, text_web: torch.Tensor, text_corpus: torch.Tensor,
                 shrinkage: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Setting 2 (web pairs whose alt-texts differ in style from the training corpus), with the correction.

    The wanted difference is I - T_c (corpus-style text); for a web pair I - T_c = (I - T_w) + (T_w - T_c), and
    the second term is approximated by its mean, -delta_w->c with delta_w->c = mean(T_c) - mean(T_w). So
    mu = mean(I - T_w) - delta_w->c, and Sigma is the covariance of I - T_w.
    """
    mu, cov = fit_gaussian(image_web - text_web, shrinkage)
    delta = text_corpus.mean(0) - text_web.mean(0)
    return mu - delta, cholesky_factor(cov)


def kl_diag_gaussians(m1: torch.Tensor, v1: torch.Tensor, m2: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """KL( N(m1, diag v1) || N(m2, diag v2) ), summed over dimensions."""
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1).sum()


def batch_kl_to_gaussian(x: torch.Tensor, mu: torch.Tensor, L: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL of a batch's diagonal Gaussian fit, (B, D) rows ``x``, against N(mu, diag(L L^T)).

    Diagonal on both sides: a batch of B < D samples cannot give a full-rank covariance.
    """
    return kl_diag_gaussians(x.mean(0), x.var(0) + eps, mu, (L * L).sum(1) + eps)


def whitened_kl_to_standard(x: torch.Tensor, mu: torch.Tensor, L: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Setting 3: whiten ``x`` (B, D) with an image Gaussian N(mu, L L^T) fitted on unpaired images, then the KL
    of the whitened batch's diagonal fit against N(0, I). Zero when ``x`` is distributed like those images."""
    z = torch.linalg.solve_triangular(L, (x - mu).T, upper=False).T  # (B, D), ~N(0, I) for image-like x
    return kl_diag_gaussians(z.mean(0), z.var(0) + eps, torch.zeros_like(mu), torch.ones_like(mu))
