"""The torch layer: the compiler of eq. 5–6, generators, adaptive λ, training and diagnostics.

Models, experiments and the shell import what they use from here:

* compiling — :func:`compile` (not ``torch.compile``), :func:`compile_cell`, :class:`CompiledGraph`,
  :class:`CompiledCell` and their protocol :class:`CompiledNet`, :data:`GROUPINGS`,
  :func:`lambda_state`;
* λ — :class:`LambdaTable` (one per net), the adaptation rules (:mod:`sggraph.engine.lam`),
  :data:`NORMALIZATIONS`; the forward's record, :class:`Trace`;
* building blocks — the generators, the slot-neuron arrays, the built-in node functions;
* training and diagnostics — :func:`train_step`, :func:`adam`, :func:`profile`,
  :func:`format_profile`, :func:`all_finite`.
"""

from .compile import CompiledGraph, compile, lambda_state
from .diagnostics import NodeProfile, condition_b_test, format_profile, profile
from .functions import FUNCTIONS, make_function, register_function
from .generators import GENERATOR_INITS, LinearGenerator, SlotGenerator, TabularGenerator
from .lam import GROUPINGS, NORMALIZATIONS, ChildRule, LambdaTable, ParentRule, StateRule, momentum_step
from .mixing import Record, all_finite
from .neuron import RecurrentSlotArray, RecurrentSlotGenerator, SlotNeuronArray
from .protocol import CompiledNet
from .recurrent import GENERATOR_TARGETS, CompiledCell, compile_cell, temporal_schedule
from .trace import NodeTrace, StateTrace, Trace
from .training import StepResult, adam, train_step

__all__ = [
    "FUNCTIONS",
    "GENERATOR_INITS",
    "GENERATOR_TARGETS",
    "GROUPINGS",
    "NORMALIZATIONS",
    "ChildRule",
    "CompiledCell",
    "CompiledGraph",
    "CompiledNet",
    "LambdaTable",
    "LinearGenerator",
    "NodeProfile",
    "NodeTrace",
    "ParentRule",
    "Record",
    "RecurrentSlotArray",
    "RecurrentSlotGenerator",
    "SlotGenerator",
    "SlotNeuronArray",
    "StateRule",
    "StateTrace",
    "StepResult",
    "TabularGenerator",
    "Trace",
    "adam",
    "all_finite",
    "compile",
    "compile_cell",
    "condition_b_test",
    "format_profile",
    "lambda_state",
    "make_function",
    "register_function",
    "momentum_step",
    "profile",
    "temporal_schedule",
    "train_step",
]
