"""λ, the mixing weight, in one place: who owns each value (:mod:`.table`), how it adapts
(:mod:`.rules`, with the batch estimate of eq. 18 in :mod:`.estimate`, the slot neurons'
closed forms in :mod:`.slot` and the per-parent feedback parts in :mod:`.parent`).

* :class:`LambdaTable` — one per compiled net; set, read and validate every λ;
* :class:`ChildRule`, :class:`ParentRule`, :class:`StateRule` — batch estimates from the table
  and the step's trace; :func:`momentum_step` is the one momentum update.
"""

from .estimate import (
    NORMALIZATIONS,
    batch_lambda_from_moments,
    batch_lambda_from_stats,
    batch_lambda_from_vectors,
    normalization_mode,
    per_sample_param_grads,
    unit_feedback,
)
from .parent import feedback_parts
from .rules import (
    ChildRule,
    ParentRule,
    StateRule,
    adapt,
    check_momentum,
    feedback_lambda,
    momentum_step,
    no_feedback_error,
    node_lambda,
    rule_for,
)
from .slot import has_forward_tensors, recurrent_state_lambda, slot_array_lambda, state_lambda_from_forward
from .table import GROUPINGS, LambdaTable, check_lambda_value

__all__ = [
    "GROUPINGS",
    "NORMALIZATIONS",
    "ChildRule",
    "LambdaTable",
    "ParentRule",
    "StateRule",
    "adapt",
    "batch_lambda_from_moments",
    "batch_lambda_from_stats",
    "batch_lambda_from_vectors",
    "check_lambda_value",
    "check_momentum",
    "feedback_lambda",
    "feedback_parts",
    "has_forward_tensors",
    "momentum_step",
    "no_feedback_error",
    "node_lambda",
    "normalization_mode",
    "per_sample_param_grads",
    "recurrent_state_lambda",
    "rule_for",
    "slot_array_lambda",
    "state_lambda_from_forward",
    "unit_feedback",
]
