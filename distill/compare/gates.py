"""Quality gates such as `agreement>=0.95` or `student.quality>0.8`, checked against compare's metrics.

A gate naming no metric compare writes is a typo: refused before any stage runs (exit 1), with the metrics it may
name. A gate on a real metric this run has no value for (quality without gold answers, a merged student not
measured) fails, as a gate must when it cannot show the student is good enough: exit 3, summary.json written.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from distill.errors import UserError

# Numbers in metrics.json a gate may name: top-level ones, and each served model's (teacher, student: the one the
# verdict is about, students.adapter / students.merged, baseline) with its task's extras (Task.details).
TOP_LEVEL = ("agreement", "quality_diff", "cost_ratio", "break_even_queries", "payback_days",
             "adapter_merged_agreement", "n_queries")
MODELS = ("teacher", "student", "students.adapter", "students.merged", "baseline")
PER_MODEL = ("quality", "valid_rate", "agreement_with_teacher", "concurrency", "queries_per_s", "tokens_per_s",
             "latency_ms.p50", "latency_ms.p95", "latency_ms.p99", "prompt_tokens_per_query",
             "completion_tokens_per_query", "cost_per_1k_queries", "requests", "failed_requests",
             "macro_f1", "micro_f1", "field_accuracy", "empty_answered_empty", "rouge1", "rouge2", "rougeL")
PER_MODEL_GROUPS = ("per_class.", "per_field.")  # per_class.<label>.f1, per_field.<field>

_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")


def parse_gate(text: str) -> tuple[str, str, float]:
    match = _GATE.match(text)
    if not match:
        raise UserError(f"gate {text!r}: expected METRIC OP NUMBER, e.g. 'agreement>=0.95' or "
                        "'student.quality>0.8' (OP one of >=, <=, >, <, ==)")
    if not known_metric(match.group(1)):
        raise UserError(f"gate {text!r}: no metric {match.group(1)!r}; a gate may name {', '.join(TOP_LEVEL)}, or "
                        f"MODEL.NAME with MODEL one of {', '.join(MODELS)} and NAME one of {', '.join(PER_MODEL)}, "
                        "per_class.LABEL.f1 or per_field.FIELD")
    return match.group(1), match.group(2), float(match.group(3))


def known_metric(path: str) -> bool:
    if path in TOP_LEVEL:
        return True
    model = next((m for m in MODELS if path.startswith(m + ".")), None)
    name = path.removeprefix(f"{model}.") if model else ""
    return bool(model) and (name in PER_MODEL or (name.startswith(PER_MODEL_GROUPS) and name.count(".") >= 1))


def metric_value(metrics: dict[str, Any], path: str) -> float | None:
    """The metric's number in this run, or None where the run has none (no gold, a model not measured)."""
    value: Any = metrics
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return float(value)


def check_gates(gates: tuple[str, ...] | list[str], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Each gate with its value and whether it passed; one without a value fails, saying so."""
    results = []
    for gate in gates:
        path, op, threshold = parse_gate(gate)
        value = metric_value(metrics, path)
        passed = value is not None and bool(_OPERATORS[op](value, threshold))
        results.append({"gate": gate, "value": value, "passed": passed}
                       | ({} if value is not None else {"reason": f"this run has no value for {path}"}))
    return results


def describe_gate(result: dict[str, Any]) -> str:
    """`gate agreement>=0.9: FAILED (value 0.85)`, or `... (this run has no value for ...)`."""
    value = f"value {result['value']:.4g}" if result["value"] is not None else result["reason"]
    return f"gate {result['gate']}: {'passed' if result['passed'] else 'FAILED'} ({value})"
