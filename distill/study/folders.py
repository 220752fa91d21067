"""Run folders of a study's variants and learning-curve points, sharing the main run's labelled stages."""

from __future__ import annotations

import shutil
from pathlib import Path

from distill.errors import UserError
from distill.layout import RunLayout

SHARED_STAGES = ("generate", "filter")


def variant_layout(layout: RunLayout, name: str, shared: tuple[str, ...] = SHARED_STAGES) -> RunLayout:
    """A variant's run folder, whose `shared` stage folders link to the main run's and whose other stages are
    its own. A variant whose settings changed since its last run (a filter override added or removed) has its
    links and folders switched: a stage folder it owned holds only what it derived from the shared labels."""
    variant = layout.variant(name)
    variant.root.mkdir(parents=True, exist_ok=True)
    for stage in SHARED_STAGES:
        folder = variant.stage_dir(stage)
        if stage in shared and not folder.is_symlink():
            if folder.exists() and stage != "filter":  # generate holds paid labels: never deleted here
                raise UserError(f"{folder}: a {stage} folder of its own where the study links the main run's; "
                                f"move it away (or delete it) and run the study again")
            if folder.exists():
                shutil.rmtree(folder)
            folder.symlink_to(Path("..", "..", stage), target_is_directory=True)
        elif stage not in shared and folder.is_symlink():
            folder.unlink()  # the link only: the main run's folder stays
    return variant
