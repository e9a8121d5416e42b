"""Weight-space methods on state dicts: linear extrapolation, RL-Extra jumps, rank-k updates and AlphaRL.
(The two output-space (logits) extrapolations are papers/kernels.py's, applied per decoded token by papers/lockstep.py.)

Pure functions on tensors and state dicts (dict[str, Tensor]), no I/O; one small object, RLExtra, applies the
jumps to a model in train.py's loop. Parameter names follow the HF Llama convention
(model.layers.{i}.self_attn.q_proj.weight, ..., model.norm.weight, lm_head.weight).
All arithmetic is done in float32 (float64 if the input is float64) and cast back to the dtype of the
checkpoint the untouched tensors come from, so bf16 checkpoints lose no precision in the differences.
Paper 2 = "Not All Steps are Informative: On the Linearity of LLMs' RLVR Training" (arXiv 2601.04537);
Paper 3 = "On Predictability of Reinforcement Learning Dynamics for Large Language Models" (AlphaRL,
arXiv 2510.00553). papers/__init__.py lists where every paper's equations live.
"""

import torch

# -----------------------------------------------------------------------------
# which tensors a method touches


def is_norm(name):
    """Norm parameters (RMSNorm/LayerNorm weights and biases, q_norm/k_norm): any name containing 'norm'."""
    return "norm" in name


def is_update_matrix(name, tensor):
    """The 2-D attention/MLP matrices of the transformer blocks (q/k/v/o, gate/up/down projections)."""
    return name.startswith("model.layers.") and name.endswith("_proj.weight") and tensor.ndim == 2


def _work(t):
    """Upcast to a float type safe for differences (float32, or float64 if already float64)."""
    return t.double() if t.dtype == torch.float64 else t.float()


def _check_keys(*sds):
    keys = set(sds[0])
    for sd in sds[1:]:
        if set(sd) != keys:
            raise KeyError(f"state dicts differ in keys: {sorted(keys ^ set(sd))[:5]}")


# -----------------------------------------------------------------------------
# Paper 2: extrapolation along the line through two checkpoints


# Paper 2 (arXiv 2601.04537), Eq. 2: weight extrapolation W_t' = W_t0 + alpha (W_t1 - W_t0)
def extrapolate_weights(sd0, sd1, alpha, into=None):
    """Every floating-point tensor moves to W_t0 + alpha (W_t1 - W_t0); norm tensors (and non-float
    buffers) are copied from sd1. alpha = (t' - t0) / (t1 - t0); alpha = 1 returns sd1. into: a model's
    state dict to write the result into, tensor by tensor (no third full copy of the weights)."""
    _check_keys(sd0, sd1)
    out = {} if into is None else into
    for name, w1 in sd1.items():
        if is_norm(name) or not w1.is_floating_point():
            w = w1 if into is not None else w1.clone()
        else:
            w0 = _work(sd0[name])
            w = (w0 + alpha * (_work(w1) - w0)).to(w1.dtype)
        if into is None:
            out[name] = w
        else:
            into[name].copy_(w)
    return out


# Paper 2 (arXiv 2601.04537), Eq. 3: RL-Extra jump W_{s+m+n} = W_s + ((m+n)/m) (W_{s+m} - W_s)
def rl_extra_jump(sd_s, sd_sm, m, n):
    """After m real RL steps from W_s to W_{s+m}, skip n steps by extrapolating; norms from sd_sm."""
    return extrapolate_weights(sd_s, sd_sm, (m + n) / m)


# Paper 2 (arXiv 2601.04537), Eq. 3 in a training loop (RL-Extra)
class RLExtra:
    """RL-Extra in a training loop: every m real steps, the model jumps n virtual steps along the segment
    it has just trained (rl_extra_jump). Holds that segment's start, (step, weights); m = 0 never jumps.
    `segment_start` is what a checkpoint saves and `load` restores (trainer state, to resume exactly).
    The optimizer is the training loop's: train.py's --rl_extra_optimizer=reset makes a fresh one after each
    jump, and its learning rate follows the step count, virtual steps included."""

    def __init__(self, m=0, n=0):
        self.m, self.n, self.segment_start = m, n, None

    def load(self, segment_start, device):
        """A saved segment start (None: none), moved next to the weights (trainer states load to the CPU)."""
        if segment_start is not None:
            segment_start = (segment_start[0], {k: v.to(device) for k, v in segment_start[1].items()})
        self.segment_start = segment_start

    def start(self, step, model):
        """A segment starts here: keep a copy of the weights."""
        self.segment_start = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})

    def jump(self, model, real_steps, step, total_steps):
        """After the real step that brought the run to `step` (the real_steps-th): if it ends a segment, move
        the weights by Eq. 3 and start the next segment. The jump stops at total_steps. Returns its length
        (0: no jump)."""
        n = min(self.n, total_steps - step)
        if not (self.m and real_steps % self.m == 0 and n):
            return 0
        model.load_state_dict(rl_extra_jump(self.segment_start[1], model.state_dict(), self.m, n))
        self.start(step + n, model)
        return n


# -----------------------------------------------------------------------------
# Paper 3: rank-k structure of the RL update


def top_component(dW):
    """Top singular triple (s1, u1, v1) of a 2-D matrix, s1 u1 v1^T being its best rank-1 approximation.
    The sign of (u1, v1) is whatever the SVD returns; only the pair together is determined."""
    U, S, Vh = torch.linalg.svd(_work(dW), full_matrices=False)
    return S[0], U[:, 0], Vh[0]


# Paper 3 (AlphaRL, arXiv 2510.00553), rank-1 model: W = W_base + (||dW||_F / ||dW_k||_F) dW_k,
# dW_k = the top-k SVD truncation of dW
def rank_k_update(W_base, W_rl, k=1):
    """Keep only the top-k singular directions of dW = W_rl - W_base, rescaled to dW's Frobenius norm.
    dW = 0 returns W_base."""
    dW = _work(W_rl) - _work(W_base)
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    norm_k = S[:k].square().sum().sqrt()
    if norm_k == 0:
        return W_base.clone()
    dW_k = (U[:, :k] * S[:k]) @ Vh[:k]
    scale = S.square().sum().sqrt() / norm_k  # ||dW||_F / ||dW_k||_F
    return (_work(W_base) + scale * dW_k).to(W_base.dtype)


def rank_k_state_dict(sd_base, sd_rl, k=1):
    """Rank-k model of Paper 3: every update matrix gets rank_k_update; all other tensors (embeddings,
    lm_head, norms, biases) keep their base values. Returns (sd, shares) with
    shares[name] = s1^2 / sum_i s_i^2, the fraction of the update's energy in its top component
    (nan where the update is exactly zero)."""
    _check_keys(sd_base, sd_rl)
    out, shares = {}, {}
    for name, wb in sd_base.items():
        if is_update_matrix(name, wb):
            out[name] = rank_k_update(wb, sd_rl[name], k)
            S = torch.linalg.svdvals(_work(sd_rl[name]) - _work(wb))
            total = S.square().sum()
            shares[name] = (S[0].square() / total).item() if total > 0 else float("nan")
        else:
            out[name] = wb.clone()
    return out, shares


# -----------------------------------------------------------------------------
# Paper 3: AlphaRL, extrapolating the rank-1 update from an early window of checkpoints


def linear_fit_predict(y, x, x_star):
    """Per-column least-squares line y ~ b0 + b1 x over the rows (K points), evaluated at x_star.
    y: (K, D), x: (K,) with at least two distinct values. Returns (D,)."""
    x = x.to(y.dtype)
    xc = x - x.mean()
    denom = xc.square().sum()
    if denom == 0:
        raise ValueError("need at least two distinct steps to fit a line")
    y_mean = y.mean(0)
    slope = (xc[:, None] * (y - y_mean)).sum(0) / denom
    return y_mean + slope * (x_star - x.mean())


# Paper 3 (AlphaRL, arXiv 2510.00553), label-free variant: a_k = s1_k u1_k fit linearly in step,
# W_pred = W_0 + a* v1_K^T
def alpharl_predict(W0, window, steps, target_step, add_to="w0", rescale=False):
    """Predict the weight matrix at target_step from checkpoints W_k (k in `steps`, step order) of one matrix.

    For each window checkpoint: (s1_k, u1_k, v1_k) = top component of W_k - W0 and a_k = s1_k u1_k.
    Signs are aligned to the LAST window checkpoint K (the reference, it is the one whose v1_K is used):
    a_k is flipped if u1_k . u1_K < 0. Each coordinate of a_k is fit by least squares against step and
    evaluated at target_step, giving a*. v1_K comes from the same SVD as u1_K, so a_K v1_K^T is exactly the
    top component of W_K - W0.
    add_to="w0": W_pred = W0 + a* v1_K^T (the paper's formula).
    add_to="wk": W_pred = W_K + a* v1_K^T (the authors' code); this double-counts dW_K, since a* v1_K^T
    already is the whole predicted update from W0. Kept only to reproduce their numbers.
    Including W0 itself in the window (with its step) adds the point a = 0 at that step to the fit.
    rescale=True multiplies the predicted update by ||W_K - W0||_F / s1_K: the rank-1 prediction is given the
    whole update's Frobenius norm, in the ratio the last window checkpoint has (as rank_k_update does with
    the final update's; label-free, like the rest)."""
    if len(window) != len(steps) or len(window) < 2:
        raise ValueError("need a window of >= 2 checkpoints with one step each")
    base = _work(W0)
    comps = [top_component(_work(Wk) - base) for Wk in window]
    s_ref, u_ref, v_ref = comps[-1]
    a = torch.stack([s * u if torch.dot(u, u_ref) >= 0 else -s * u for s, u, _ in comps])
    a_star = linear_fit_predict(a, torch.as_tensor(steps, dtype=a.dtype), float(target_step))
    update = torch.outer(a_star, v_ref)
    if rescale and s_ref > 0:
        update = update * (torch.linalg.matrix_norm(_work(window[-1]) - base) / s_ref)
    if add_to == "w0":
        start = base
    elif add_to == "wk":
        start = _work(window[-1])
    else:
        raise ValueError(f"add_to must be 'w0' or 'wk', got {add_to!r}")
    return (start + update).to(window[-1].dtype)


def alpharl_state_dict(sd0, window_sds, steps, target_step, add_to="w0", rescale=False):
    """AlphaRL on a whole model: alpharl_predict for every update matrix; every other tensor is taken
    from the last window checkpoint."""
    _check_keys(sd0, *window_sds)
    out = {}
    for name, wk in window_sds[-1].items():
        if is_update_matrix(name, wk):
            out[name] = alpharl_predict(sd0[name], [sd[name] for sd in window_sds], steps, target_step, add_to,
                                        rescale)
        else:
            out[name] = wk.clone()
    return out
