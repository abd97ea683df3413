"""The k-diffusion samplers that stable-audio-tools offers as ``sampler_type``, on a denoiser
``D(x, sigma)``, with the schedule it uses: ``steps`` noise levels spaced exponentially from
``sigma_max`` down to ``sigma_min``, then 0.

They follow ``k_diffusion.sampling`` (the version stable-audio-tools pins) step for step, so a
seed and a sampler name mean the same thing here as on Replicate. Randomness comes from the
caller's generator (ancestral samplers) or from a Brownian tree seeded from it (SDE samplers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from scipy import integrate

from overture.models.stable_audio.request import SAMPLER_TYPES

# torchsde rounds the Brownian tree's start, then warns that the smallest sigma, which it equalled
# before rounding, lies below it; it clamps the query, which is what the samplers want.
warnings.filterwarnings("ignore", message="Should have ta>=t0", category=UserWarning)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OnStep = Callable[[int], None]
#: The data estimates of earlier steps with their step sizes h, newest first.
History = list[tuple[torch.Tensor, torch.Tensor]]
Correction = Callable[[torch.Tensor, torch.Tensor, History], torch.Tensor | float]
Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``get_sigmas_polyexponential(steps, sigma_min, sigma_max, rho=1)``: steps + 1 levels ending in 0."""
    ramp = torch.linspace(1, 0, steps, dtype=torch.float64)
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def sample(
    sampler_type: str,
    denoise: Denoiser,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator,
    on_step: OnStep,
) -> torch.Tensor:
    """Denoise ``noise`` (unit variance) along ``sigmas`` with the named sampler (one of
    ``SAMPLER_TYPES``)."""
    return SAMPLERS[sampler_type](denoise, noise * sigmas[0], sigmas, generator, on_step)


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE's derivative dx/dsigma."""
    return (x - denoised) / sigma


def _brownian_noise(x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator) -> Callable[..., torch.Tensor]:
    # Imported here: diffusers' tree needs torchsde, which only the SDE samplers use.
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    # diffusers annotates these float, but hands them to torch.as_tensor, which takes 0-d tensors as they are.
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)  # type: ignore[arg-type]


def dpmpp_3m_sde(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator, on_step: OnStep
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE, eta 1: stable-audio-tools' default sampler."""

    def correction(denoised: torch.Tensor, h: torch.Tensor, history: History) -> torch.Tensor | float:
        phi_2 = torch.expm1(-2 * h) / (2 * h) + 1
        if len(history) >= 2:
            (denoised_1, h_1), (denoised_2, h_2) = history[:2]
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / (2 * h) - 0.5
            return phi_2 * d1 - phi_3 * d2
        if history:
            denoised_1, h_1 = history[0]
            return phi_2 * (denoised - denoised_1) / (h_1 / h)
        return 0

    return _multistep_sde(denoise, x, sigmas, generator, on_step, correction)


def dpmpp_2m_sde(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator, on_step: OnStep
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, eta 1, midpoint correction."""

    def correction(denoised: torch.Tensor, h: torch.Tensor, history: History) -> torch.Tensor | float:
        if not history:
            return 0
        denoised_1, h_1 = history[0]
        return -0.5 * torch.expm1(-2 * h) * (h / h_1) * (denoised - denoised_1)

    return _multistep_sde(denoise, x, sigmas, generator, on_step, correction)


def _multistep_sde(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator,
    on_step: OnStep,
    correction: Correction,
) -> torch.Tensor:
    """The DPM-Solver++ multistep SDE samplers, eta 1. Each step, over h = log(sigma / sigma_next),
    moves to the data estimate's first-order solution, adds ``correction(denoised, h, history)``
    from the earlier steps' estimates and h's (``history``, newest first), then fresh Brownian
    noise; the last step, to 0, lands on the estimate."""
    noise = _brownian_noise(x, sigmas, generator)
    history: History = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            x = torch.exp(-2 * h) * x - torch.expm1(-2 * h) * denoised + correction(denoised, h, history)
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-torch.expm1(-2 * h)).sqrt()
            history = [(denoised, h), *history][:2]  # no sampler looks further back
        on_step(i + 1)
    return x


def heun(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator, on_step: OnStep
) -> torch.Tensor:
    """Heun's second-order method (EDM's Algorithm 2 without churn): probe the next level, step
    with the mean of both slopes."""
    return _probe_and_step(
        denoise,
        x,
        sigmas,
        on_step,
        probe=lambda sigma, sigma_next: sigma_next,
        slope=lambda d, d_probe: (d + d_probe) / 2,
    )


def dpm_2(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator, on_step: OnStep
) -> torch.Tensor:
    """DPM-Solver-2: probe the geometric midpoint of the levels, step with the slope there."""
    return _probe_and_step(
        denoise,
        x,
        sigmas,
        on_step,
        probe=lambda sigma, sigma_next: sigma.log().lerp(sigma_next.log(), 0.5).exp(),
        slope=lambda d, d_probe: d_probe,
    )


def _probe_and_step(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, on_step: OnStep, probe: Combine, slope: Combine
) -> torch.Tensor:
    """The two-evaluation samplers: an Euler step from ``sigma`` to ``probe(sigma, sigma_next)``,
    then the whole step with ``slope(d, d_probe)`` of the slopes at both places; the last step,
    to 0, is plain Euler (there is no slope at 0)."""
    for i in range(len(sigmas) - 1):
        d = _to_d(x, sigmas[i], denoise(x, sigmas[i]))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            sigma_probe = probe(sigmas[i], sigmas[i + 1])
            x_probe = x + d * (sigma_probe - sigmas[i])
            d_probe = _to_d(x_probe, sigma_probe, denoise(x_probe, sigma_probe))
            x = x + slope(d, d_probe) * dt
        on_step(i + 1)
    return x


def dpmpp_2s_ancestral(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator, on_step: OnStep
) -> torch.Tensor:
    """DPM-Solver++(2S) with ancestral noise, eta 1."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            # In t = -log(sigma): a half step to s, then the full step with the denoised estimate there.
            h = sigmas[i].log() - sigma_down.log()
            sigma_s = sigmas[i] * torch.exp(-h / 2)
            x_2 = (sigma_s / sigmas[i]) * x - torch.expm1(-h / 2) * denoised
            x = (sigma_down / sigmas[i]) * x - torch.expm1(-h) * denoise(x_2, sigma_s)
        if sigmas[i + 1] > 0:
            x = x + torch.randn(x.shape, generator=generator).to(x) * sigma_up
        on_step(i + 1)
    return x


def _ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The deterministic step's target and the fresh noise's level, for eta 1."""
    sigma_up = torch.minimum(sigma_to, (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt())
    return (sigma_to**2 - sigma_up**2).sqrt(), sigma_up


def lms(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator,
    on_step: OnStep,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep of order 4 over the sigma axis."""
    levels = sigmas.double().tolist()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        slopes = [*slopes, _to_d(x, sigmas[i], denoise(x, sigmas[i]))][-order:]
        current = len(slopes)
        coefficients = [_lms_coefficient(current, levels, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(slopes), strict=True))
        on_step(i + 1)
    return x


def _lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """Integral over [t_i, t_i+1] of the Lagrange basis polynomial of point i - j."""

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return product

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


Sampler = Callable[[Denoiser, torch.Tensor, torch.Tensor, torch.Generator, OnStep], torch.Tensor]

SAMPLERS: dict[str, Sampler] = dict(
    zip(SAMPLER_TYPES, (dpmpp_3m_sde, dpmpp_2m_sde, heun, lms, dpmpp_2s_ancestral, dpm_2), strict=True)
)
