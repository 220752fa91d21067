"""Run folders of a study's variants and learning-curve points, sharing the main run's labelled stages."""

from __future__ import annotations

from pathlib import Path

from distill.layout import RunLayout

SHARED_STAGES = ("generate", "filter")


def variant_layout(layout: RunLayout, name: str, shared: tuple[str, ...] = SHARED_STAGES) -> RunLayout:
    """A variant's run folder, whose `shared` stage folders link to the main run's."""
    variant = layout.variant(name)
    variant.root.mkdir(parents=True, exist_ok=True)
    for stage in shared:
        link = variant.stage_dir(stage)
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", stage), target_is_directory=True)
    return variant
