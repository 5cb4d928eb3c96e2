"""AdaMomentum: Adam whose second moment is an EMA of the squared momentum.

Reference:
    Yizhou Wang, Yue Kang, Can Qin, Huan Wang, Yi Xu, Yulun Zhang and Yun Fu,
    "Rethinking Adaptive Stochastic Gradient Methods: Adaptive Momentum"
    (later versions: "Rethinking Adam: A Twofold Exponential Moving Average Approach"),
    arXiv:2106.11514, 2021, Algorithm 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch  # noqa: F401  (the docstring example uses it)

from ._eps_ema import ParamsT, _EpsInSecondMoment

__all__ = ["AdaMomentum"]


class AdaMomentum(_EpsInSecondMoment):
    r"""Implements the AdaMomentum algorithm (Algorithm 1 of Wang et al., 2021).

    .. math::
        \begin{aligned}
            &\textbf{input}: \alpha \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)}, \theta_0 \text{ (params)},
                \epsilon, \lambda \text{ (weight decay)}, \textit{amsgrad}, \textit{maximize},
                \textit{decoupled\_weight\_decay}, \textit{eps\_in\_denominator} \\
            &\textbf{initialize}: m_0 \leftarrow 0, \; v_0 \leftarrow 0, \; v_0^{max} \leftarrow 0 \\
            &\textbf{for}\: t = 1, 2, \ldots \textbf{do} \\
            &\quad g_t \leftarrow \nabla_\theta f_t(\theta_{t-1})
                \quad (g_t \leftarrow -g_t \text{ if } \textit{maximize}) \\
            &\quad \textbf{if}\: \lambda \neq 0 \: \textbf{and not}\: \textit{decoupled\_weight\_decay}:
                \; g_t \leftarrow g_t + \lambda \theta_{t-1} \\
            &\quad \textbf{if}\: \lambda \neq 0 \: \textbf{and}\: \textit{decoupled\_weight\_decay}:
                \; \theta_{t-1} \leftarrow \theta_{t-1} (1 - \alpha \lambda) \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) m_t^2 + \epsilon \\
            &\quad \textbf{if}\: \textit{amsgrad}: \; v_t^{max} \leftarrow \max(v_{t-1}^{max}, v_t),
                \; u_t \leftarrow v_t^{max} \;\textbf{else}\; u_t \leftarrow v_t \\
            &\quad \hat{m}_t \leftarrow m_t / (1 - \beta_1^t), \quad
                \hat{u}_t \leftarrow u_t / (1 - \beta_2^t) \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \alpha \, \hat{m}_t / \sqrt{\hat{u}_t}
                \quad \text{(paper, default)} \\
            &\quad \theta_t \leftarrow \theta_{t-1} - \alpha \, \hat{m}_t / (\sqrt{\hat{u}_t} + \epsilon)
                \quad \text{(if } \textit{eps\_in\_denominator}\text{)} \\
            &\textbf{return}\: \theta_t
        \end{aligned}

    The only change from Adam's moment estimates is that :math:`v_t` averages the squared
    *momentum* :math:`m_t^2` rather than the squared gradient :math:`g_t^2`, and that ε enters
    :math:`v_t` every step (as in EAdam). Algorithm 1 of the paper has ε only inside
    :math:`v_t`; ``eps_in_denominator=True`` additionally adds it to :math:`\sqrt{\hat u_t}`
    as Adam does. The extra term is negligible whenever ε > 0, since
    :math:`\sqrt{\hat u_t} \ge \sqrt{\epsilon / (1 - \beta_2)} \gg \epsilon`.

    Unrolling the recursion, the second moment kept in ``state['exp_avg_sq']`` is

    .. math::
        v_t = v'_t + \epsilon \sum_{i=0}^{t-1} \beta_2^i
            = v'_t + \epsilon \, \frac{1 - \beta_2^t}{1 - \beta_2},
        \qquad v'_t = \beta_2 v'_{t-1} + (1 - \beta_2) m_t^2,

    so after bias correction :math:`\hat v_t = \hat v'_t + \epsilon / (1 - \beta_2)`.

    State contract (relied on by the rest of ``epsfinder``):
        * ``state['step']``: float32 CPU scalar tensor, the number of steps taken.
        * ``state['exp_avg']``: :math:`m_t`.
        * ``state['exp_avg_sq']``: :math:`v_t` **including** the accumulated ε, exactly as
          in the update equations above (not the ε-free EMA :math:`v'_t`).
        * ``state['max_exp_avg_sq']`` (only with ``amsgrad=True``): the running maximum of
          the ε-included :math:`v_t`.

    Args:
        params: Iterable of parameters or dicts defining parameter groups.
        lr: Learning rate :math:`\alpha`.
        betas: Coefficients :math:`(\beta_1, \beta_2)` of the running averages of the gradient and
            of the squared momentum, each in ``[0, 1)``.
        eps: :math:`\epsilon`, added to :math:`v_t` every step.
        weight_decay: Weight decay coefficient :math:`\lambda`.
        amsgrad: Use the AMSGrad variant (maximum of the ε-included :math:`v_t`). Not part of
            the paper; provided for parity with :class:`~epsfinder.optim.EAdam`.
        maximize: Maximize the objective instead of minimizing it.
        decoupled_weight_decay: Apply AdamW-style decoupled weight decay
            :math:`\theta \leftarrow \theta (1 - \alpha\lambda)` instead of the coupled L2 term
            :math:`g \leftarrow g + \lambda\theta`.
        eps_in_denominator: Also add ε to the denominator, :math:`\sqrt{\hat u_t} + \epsilon`
            (Adam/EAdam style). Off by default to follow Algorithm 1 of the paper.

    Raises:
        ValueError: If a hyperparameter is out of range.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = AdaMomentum(model.parameters(), lr=1e-3)
        >>> model(torch.randn(4, 3)).pow(2).mean().backward()
        >>> _ = opt.step()
    """

    _display_name: ClassVar[str] = "AdaMomentum"
    _squares_momentum: ClassVar[bool] = True
    _extra_group_defaults: ClassVar[dict[str, Any]] = {"eps_in_denominator": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        eps_in_denominator: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize,
            decoupled_weight_decay,
            eps_in_denominator=eps_in_denominator,
        )

