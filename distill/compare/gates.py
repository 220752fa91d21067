"""Quality gates such as `agreement>=0.95` or `student.quality>0.8`, checked against compare's metrics."""

from __future__ import annotations

import operator
import re
from typing import Any

from distill.errors import UserError

_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")


def parse_gate(text: str) -> tuple[str, str, float]:
    match = _GATE.match(text)
    if not match:
        raise UserError(f"gate {text!r}: expected METRIC OP NUMBER, e.g. 'agreement>=0.95' or "
                        "'student.quality>0.8' (OP one of >=, <=, >, <, ==)")
    return match.group(1), match.group(2), float(match.group(3))


def metric_value(metrics: dict[str, Any], path: str) -> float:
    value: Any = metrics
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise UserError(f"gate metric {path!r} is not in metrics.json; e.g. agreement, cost_ratio, "
                            "student.quality, student.concurrency, student.latency_ms.p95")
        value = value[part]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UserError(f"gate metric {path!r} is {value!r}, not a number")
    return float(value)


def check_gates(gates: tuple[str, ...] | list[str], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for gate in gates:
        path, op, threshold = parse_gate(gate)
        value = metric_value(metrics, path)
        results.append({"gate": gate, "value": value, "passed": bool(_OPERATORS[op](value, threshold))})
    return results
