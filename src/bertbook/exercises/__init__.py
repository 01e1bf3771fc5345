"""Checks for the graded exercises of the book.

Every graded exercise asks the student for a function; the cell after it calls a check from
this module, e.g. ``check_masked_softmax(masked_softmax)``. A check

* runs the student's function and the reference from ``bertbook`` on several inputs — random
  ones (from a fixed seed, so a re-run says the same thing) and edge cases (padding, a fully
  masked row, ...) — and compares the results with a tolerance;
* on the first difference raises :class:`ExerciseFailed` (an ``AssertionError``), saying for which
  input, what was expected and what came back, plus a hint when the answer matches a known
  mistake (attention without the 1/√d_k scaling, a tied weight counted twice, ...);
* reports a function that still raises ``NotImplementedError`` as "not implemented yet";
* on success prints one stable line, ``✓ check_name: N cases passed``.

A check only calls the function: it never reads the student's source code.

The shared harness is in ``_harness``; the checks of each chapter are in their own module
(``ch01_attention``, ``ch02_encoder``, ...), and all of them can be imported from here.

Adding a check (for a later chapter, in its own module ``chNN_name.py``)::

    def check_my_thing(student_fn):
        cases = [Case("a short description of the input", args=(...,)), ...]
        hints = [Hint(wrong_fn, "what the student probably did, and how to fix it")]
        run_check("check_my_thing", student_fn, reference_fn, cases, hints=hints)

``reference_fn`` should call into ``bertbook`` (so the book's code and the grading agree) and
``wrong_fn`` takes the same arguments and reproduces a typical mistake.
"""
from ._harness import Case, ExerciseFailed, Hint, compare, describe, run_check
from .ch01_attention import check_attention, check_masked_softmax, check_split_merge_heads
from .ch02_encoder import check_encoder_layer, check_encoder_num_parameters
from .ch03_bert import check_bert_embeddings, check_bert_num_parameters
from .ch04_pretraining_data import check_mask_tokens, check_nsp_pair
from .ch05_pretraining import check_lr_schedule, check_mlm_loss_accuracy
from .ch06_distillation import check_distillation_loss, check_student_layers
from .ch07_distilling_minilm import check_classification_kd_loss
from .ch10_deployment import check_quantize_per_channel

__all__ = [
    "ExerciseFailed", "Case", "Hint", "run_check", "compare", "describe",
    "check_masked_softmax", "check_attention", "check_split_merge_heads",          # chapter 1
    "check_encoder_layer", "check_encoder_num_parameters",                         # chapter 2
    "check_bert_num_parameters", "check_bert_embeddings",                          # chapter 3
    "check_mask_tokens", "check_nsp_pair",                                         # chapter 4
    "check_mlm_loss_accuracy", "check_lr_schedule",                                # chapter 5
    "check_distillation_loss", "check_student_layers",                             # chapter 6
    "check_classification_kd_loss",                                                # chapter 7
    "check_quantize_per_channel",                                                  # chapter 10
]
