"""Bayesian proposals: a BoTorch Gaussian process over binary skip vectors.

Acquisition is UCB, not EI: a set's matchness is measured on whichever
window the proposer had at the time, so observations are noisy and EI's
"best value so far" is itself a lucky draw; UCB needs no incumbent value
and trades exploration explicitly (the reference SWIFT uses UCB too).

The acquisition is maximised over the relaxed cube ``[0, 1]^d`` restricted
to ``sum(x) = size`` (the number of sub-layers to skip), starting from the
best scored sets of that size, and the optimum is projected to a valid set
by keeping its ``size`` largest coordinates. Keeping the relaxed point on
that slice makes the projection a small step, not a guess.
"""

import random

import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

# UCB's exploration weight: mean + 2.5 * std, the reference's kappa.
UCB_BETA = 2.5**2
# Starting points for the acquisition optimizer (best known sets, then random).
NUM_STARTS = 4
# L-BFGS iterations for the GP hyperparameters: the marginal likelihood is flat
# near its optimum (measured: 50 vs 500 iterations change it by 0.2%), and
# the CPUs are shared with serving.
FIT_MAXITER = 100


def random_vector(dims: int, size: int, rng: random.Random) -> list[int]:
    """A uniformly random binary vector with ``size`` ones."""
    ones = set(rng.sample(range(dims), size))
    return [int(i in ones) for i in range(dims)]


def suggest(
    vectors: list[list[int]], values: list[float], size: int, rng: random.Random
) -> list[int]:
    """The binary vector with ``size`` ones that UCB picks next, given the
    scored vectors and their matchness."""
    dims = len(vectors[0])
    train_x = torch.tensor(vectors, dtype=torch.float64)
    train_y = torch.tensor(values, dtype=torch.float64).unsqueeze(-1)
    model = SingleTaskGP(train_x, train_y)
    fit_gpytorch_mll(
        ExactMarginalLogLikelihood(model.likelihood, model),
        optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}},
    )

    ranked = sorted(range(len(vectors)), key=values.__getitem__, reverse=True)
    starts = [vectors[i] for i in ranked if sum(vectors[i]) == size][:NUM_STARTS]
    starts += [random_vector(dims, size, rng) for _ in range(NUM_STARTS - len(starts))]
    candidate, _ = optimize_acqf(
        UpperConfidenceBound(model, beta=UCB_BETA),
        bounds=torch.stack([torch.zeros(dims), torch.ones(dims)]).double(),
        q=1,
        num_restarts=NUM_STARTS,
        batch_initial_conditions=torch.tensor(starts, dtype=torch.float64).unsqueeze(1),
        equality_constraints=[
            (torch.arange(dims), torch.ones(dims, dtype=torch.float64), float(size))
        ],
    )
    chosen = set(torch.argsort(candidate[0], descending=True)[:size].tolist())
    return [int(i in chosen) for i in range(dims)]
