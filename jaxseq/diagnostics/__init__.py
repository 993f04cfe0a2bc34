"""Gradient-flow diagnostics for any `Cell`: pure functions that jit, vmap and differentiate.

    state_grad_norms      ‖∂L/∂carry_t‖ for every t, one backward pass (zero probes)
    input_sensitivity     ‖∂carry_T/∂x_t‖_F for every t
    recurrent_jacobians   J_t = ∂carry_t/∂carry_{t-1} along a trajectory
    jacobian_products / jacobian_product_norms / jacobian_singular_values
    lyapunov_exponents    QR method on the J_t
    spectral_radius, max_singular_value   of a recurrent weight
    gate_activations / gate_saturation    LSTM, GRU, minGRU, minLSTM gates

Time index t is the state after reading `xs[t]`, as in `unroll`'s `ys[t]`.
"""

from jaxseq.diagnostics.gates import GateSaturation, gate_activations, gate_saturation
from jaxseq.diagnostics.jacobians import (
    jacobian_product_norms,
    jacobian_products,
    jacobian_singular_values,
    lyapunov_exponents,
    max_singular_value,
    recurrent_jacobians,
    spectral_radius,
)
from jaxseq.diagnostics.probes import (
    InputSensitivity,
    StateGradNorms,
    input_sensitivity,
    state_grad_norms,
)

__all__ = [
    "GateSaturation",
    "InputSensitivity",
    "StateGradNorms",
    "gate_activations",
    "gate_saturation",
    "input_sensitivity",
    "jacobian_product_norms",
    "jacobian_products",
    "jacobian_singular_values",
    "lyapunov_exponents",
    "max_singular_value",
    "recurrent_jacobians",
    "spectral_radius",
    "state_grad_norms",
]
