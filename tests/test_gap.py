"""Noise injection, Gaussian fitting and sampling, and the losses, on tiny seeded tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from zsc_core import gap


def test_inject_noise_shapes_norms_and_statistics():
    g = torch.Generator().manual_seed(0)
    feat = F.normalize(torch.randn(4, 512, generator=g), dim=-1)
    out = gap.inject_noise(feat, 10, 0.016, g)
    assert out.shape == (4, 10, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(4, 10), atol=1e-5)
    # Hand-computed: inject_noise is normalize(feat + sqrt(sigma2) * z) with z the generator's next normals.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    z = torch.randn(4, 10, 512, generator=g2)
    expected = F.normalize(feat[:, None] + math.sqrt(0.016) * z, dim=-1)
    assert torch.allclose(gap.inject_noise(feat, 10, 0.016, g1), expected, atol=1e-6)
    # The noise is larger than the unit feature (norm ~2.9), so the cosine to the clean feature is low...
    cos = (out * feat[:, None]).sum(-1)
    assert 0.2 < cos.mean().item() < 0.5  # expected 1/sqrt(1 + 512 * 0.016) ~ 0.33
    # ...but the mean of the 10 copies points back at the feature.
    assert F.cosine_similarity(out.mean(1), feat).min().item() > 0.6
    # Copies differ from each other; zero noise leaves the feature unchanged.
    assert (out[:, 0] - out[:, 1]).abs().max() > 0.1
    assert torch.allclose(gap.inject_noise(feat, 3, 0.0)[:, 2], feat, atol=1e-6)


@pytest.mark.parametrize("sigma2", [0.004, 0.016, 0.064])
def test_inject_noise_variance_sets_the_cosine_to_the_clean_feature(sigma2):
    """Through inject_noise itself: for unit features in D dimensions and N(0, sigma2) noise per dimension, the
    cosine of a noisy copy to its feature concentrates at 1 / sqrt(1 + D sigma2) (noise norm^2 ~ D sigma2)."""
    g = torch.Generator().manual_seed(2)
    feat = F.normalize(torch.randn(500, 512, generator=g), dim=-1)
    cos = (gap.inject_noise(feat, 4, sigma2, g) * feat[:, None]).sum(-1)
    assert cos.mean().item() == pytest.approx(1 / math.sqrt(1 + 512 * sigma2), abs=0.01)


def test_inject_noise_is_seeded_and_keeps_3d_input():
    x = F.normalize(torch.randn(2, 5, 8), dim=-1)
    a = gap.inject_noise(x, 5, 0.1, torch.Generator().manual_seed(7))
    b = gap.inject_noise(x, 5, 0.1, torch.Generator().manual_seed(7))
    assert a.shape == (2, 5, 8) and torch.equal(a, b)


def test_fit_gaussian_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]])
    mu, cov = gap.fit_gaussian(x)
    assert torch.allclose(mu, torch.tensor([3.0, 4.0]))
    # deviations (-2,-2), (0,-2), (2,4): sums of products / (n-1) = 2
    assert torch.allclose(cov, torch.tensor([[4.0, 6.0], [6.0, 12.0]]))
    _, shrunk = gap.fit_gaussian(x, shrinkage=1.0)
    assert torch.allclose(shrunk, torch.eye(2) * 8.0)


def test_cholesky_sampling_recovers_mean_and_covariance():
    mu = torch.tensor([0.5, -1.0, 2.0])
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.2, -0.3, 0.5]])
    cov = a @ a.T
    L = gap.cholesky_factor(cov)
    assert torch.allclose(L @ L.T, cov, atol=1e-5)
    s = gap.sample_gaussian(mu, L, (40000,), torch.Generator().manual_seed(0))
    m, c = gap.fit_gaussian(s)
    assert torch.allclose(m, mu, atol=0.03)
    assert torch.allclose(c, cov, atol=0.04)


def test_cholesky_of_singular_matrix_uses_jitter():
    v = torch.tensor([[1.0], [2.0]])
    L = gap.cholesky_factor(v @ v.T)  # rank 1
    assert torch.isfinite(L).all()


def test_sampling_is_differentiable_in_mu_and_L():
    mu = torch.zeros(3, requires_grad=True)
    L = torch.eye(3, requires_grad=True)
    gap.sample_gaussian(mu, L, (8,), torch.Generator().manual_seed(0)).pow(2).sum().backward()
    assert mu.grad is not None and L.grad is not None and L.grad.abs().sum() > 0


def test_kl_to_standard_normal_hand_computed():
    assert gap.kl_to_standard_normal(torch.zeros(4), torch.eye(4)).item() == pytest.approx(0.0, abs=1e-6)
    # mu = (1, 0), Sigma = diag(4, 1): 0.5 * (5 + 1 - 2 - log 4)
    kl = gap.kl_to_standard_normal(torch.tensor([1.0, 0.0]), torch.diag(torch.tensor([2.0, 1.0])))
    assert kl.item() == pytest.approx(0.5 * (5 + 1 - 2 - math.log(4)), rel=1e-5)
    full = gap.kl_gaussians(torch.tensor([1.0, 0.0]), torch.diag(torch.tensor([4.0, 1.0])), torch.zeros(2),
                            torch.eye(2))
    assert full.item() == pytest.approx(kl.item(), rel=1e-5)


def test_contrastive_loss_hand_computed():
    a = torch.eye(2)
    b = torch.eye(2)
    # logits = [[10, 0], [0, 10]] -> loss = log(1 + e^-10)
    assert gap.contrastive_loss(a, b, tau=0.1).item() == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-3)
    swapped = gap.contrastive_loss(a, b.flip(0), tau=0.1).item()
    assert swapped == pytest.approx(10 + math.log(1 + math.exp(-10)), rel=1e-4)


def test_cosine_loss_and_relational_distillation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=g)
    assert gap.cosine_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert gap.cosine_loss(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    assert gap.relational_distillation(x, 2 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert gap.relational_distillation(torch.randn(5, 8, generator=g), x).item() > 0.01


def test_estimate_paired_recovers_a_planted_gap():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(4000, 6, generator=g)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    image = text + shift + 0.3 * torch.randn(4000, 6, generator=g)
    mu, L = gap.estimate_paired(image, text, shrinkage=0.0)
    assert torch.allclose(mu, shift, atol=0.03)
    assert torch.allclose(L @ L.T, 0.09 * torch.eye(6), atol=0.01)


def test_estimate_web_applies_the_corpus_correction():
    g = torch.Generator().manual_seed(1)
    content = torch.randn(3000, 4, generator=g)
    style = torch.tensor([0.0, 0.0, 3.0, 0.0])  # alt-texts sit 3 units off the corpus captions on dim 2
    gap_true = torch.tensor([1.0, 0.0, 0.0, 0.0])
    text_corpus = content
    text_web = content + style
    image = content + gap_true
    mu, _ = gap.estimate_web(image, text_web, text_corpus, shrinkage=0.0)
    assert torch.allclose(mu, gap_true, atol=1e-4)  # uncorrected it would be gap_true - style
    mu_raw, _ = gap.estimate_paired(image, text_web, shrinkage=0.0)
    assert torch.allclose(mu_raw, gap_true - style, atol=1e-4)


def test_diag_kl_hand_computed_and_batch_versions():
    kl = gap.kl_diag_gaussians(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    assert kl.item() == pytest.approx(0.5 * (math.log(1 / 2) + 3 - 1), rel=1e-6)
    g = torch.Generator().manual_seed(2)
    mu, L = torch.tensor([1.0, -1.0, 0.5]), torch.diag(torch.tensor([0.5, 2.0, 1.0]))
    x = gap.sample_gaussian(mu, L, (20000,), g)
    assert gap.batch_kl_to_gaussian(x, mu, L).item() < 0.01
    assert gap.whitened_kl_to_standard(x, mu, L).item() < 0.01
    assert gap.whitened_kl_to_standard(x + 1.0, mu, L).item() > 0.5
