"""Per-device log-loss and accuracy, grouped as in Table 3 of Schmidt & Peters.

Devices are grouped into real (a, b, c), simulated seen (s1-s3) and unseen
(s4-s6) as in TAU Urban Acoustic Scenes 2022 Mobile; a group's value is the
mean of its devices' values (the paper's "Avg." columns) and "overall" is
computed over all evaluation clips pooled. Devices outside these groups are
reported individually under "other".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tabulate import tabulate

from harness import hookimpl
from harness.api import (
    Column,
    EvalContext,
    Protocol,
    ProtocolResult,
    SplitName,
    percent_of_fraction,
)

DEVICE_GROUPS = {
    "real": ("a", "b", "c"),
    "seen": ("s1", "s2", "s3"),
    "unseen": ("s4", "s5", "s6"),
}
GROUP_TITLES = {"real": "Real", "seen": "Simulated", "unseen": "Unseen", "other": "Other"}
METRICS = {"logloss": "log-loss", "acc": "accuracy"}
EPS = 1e-15


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (rows renormalised, clipped at 1e-15)."""
    probs = probs / probs.sum(axis=1, keepdims=True)
    true = np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0)
    return float(-np.mean(np.log(true)))


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels))


def group_devices(devices: list[str]) -> dict[str, list[str]]:
    """The known groups restricted to ``devices``, plus "other" for the rest."""
    groups = {g: [d for d in members if d in devices] for g, members in DEVICE_GROUPS.items()}
    grouped = {d for members in groups.values() for d in members}
    groups["other"] = [d for d in devices if d not in grouped]
    return {g: members for g, members in groups.items() if members}


def device_metrics(probs: np.ndarray, labels: np.ndarray, devices: list[str]) -> dict[str, float]:
    """``logloss/<device>``, ``logloss/<group>``, ``logloss/overall`` and the same for ``acc``."""
    present = list(dict.fromkeys(devices))
    device_array = np.asarray(devices)
    metrics: dict[str, float] = {}
    for key, fn in (("logloss", log_loss), ("acc", accuracy)):
        per_device = {}
        for device in present:
            mask = device_array == device
            per_device[device] = fn(probs[mask], labels[mask])
            metrics[f"{key}/{device}"] = per_device[device]
        for group, members in group_devices(present).items():
            metrics[f"{key}/{group}"] = float(np.mean([per_device[d] for d in members]))
        metrics[f"{key}/overall"] = fn(probs, labels)
    return metrics


def table_columns(devices: list[str], metric: str) -> list[Column]:
    """Leaderboard columns in Table 3's order: each group's devices, then its average."""
    columns = []
    for group, members in group_devices(devices).items():
        title = GROUP_TITLES[group]
        columns += [Column(f"{metric}/{d}", d.upper(), title, chance="logloss") for d in members]
        if group != "other":
            columns.append(Column(f"{metric}/{group}", "Avg.", title, chance="logloss"))
    columns.append(Column(f"{metric}/overall", "Overall", "", chance="logloss"))
    if metric == "logloss":
        return columns
    return [percent_of_fraction(c.key, f"{c.label} acc.", c.group) for c in columns]


TAU_DEVICES = [d for members in DEVICE_GROUPS.values() for d in members]


class DeviceLogLoss(Protocol):
    """Scene-classifier log-loss and accuracy per recording device."""

    name = "device-logloss"
    description = (
        "Log-loss and accuracy per device, real/seen/unseen averages and overall (Table 3)."
    )
    needs_classifier = True
    columns = table_columns(TAU_DEVICES, "logloss") + table_columns(TAU_DEVICES, "acc")
    primary = "logloss/overall"

    @dataclass
    class Config:
        split: SplitName = "eval"

    def evaluate(self, ctx: EvalContext) -> ProtocolResult:
        probs = ctx.predict(self.config.split).numpy().astype(np.float64)
        audio = ctx.audio(self.config.split)
        devices = [clip.device or "unknown" for clip in audio.clips]
        metrics = device_metrics(probs, audio.labels.numpy(), devices)
        return ProtocolResult(metrics, render_table(metrics, list(dict.fromkeys(devices))))


def render_table(metrics: dict[str, float], devices: list[str]) -> str:
    """One row per device or group average (Table 3's order), columns log-loss and accuracy.

    Transposed against Table 3 so that it fits a 100-column terminal for any device count.
    """
    ordered = [d for d in TAU_DEVICES if d in devices] + [
        d for d in devices if d not in TAU_DEVICES
    ]
    rows = []
    by_metric = {metric: table_columns(ordered, metric) for metric in METRICS}
    for i, column in enumerate(by_metric["logloss"]):
        label = f"{column.group} {column.label}".strip()
        cells = [by_metric[m][i] for m in METRICS]
        rows.append([label, *(c.text(metrics[c.key]) for c in cells)])
    headers = ["device", *(name + by_metric[m][0].unit_suffix for m, name in METRICS.items())]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


@hookimpl
def register_protocols(register) -> None:
    register(DeviceLogLoss)
