"""Run folders of a study's variants and learning-curve points, sharing the main run's labelled stages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout

SHARED_STAGES = ("generate", "filter")


def trained_rows(layout: RunLayout) -> int:
    """The rows the student in `layout` was trained on, from its train manifest (the main run may keep a
    student trained before its latest filter run: student.retrain_min_new_rows)."""
    return json.loads(layout.manifest("train").read_text())["counts"]["train_rows"]


def shared_stages(main: Config, variant: Config) -> tuple[str, ...]:
    """The main run's stage folders a variant uses: all labelled ones; only generate where the variant's
    filter keeps other rows (it filters the same labels its own way); none where it makes its labels another
    way (teacher.samples, temperature)."""
    if variant.teacher != main.teacher:
        return ()
    return SHARED_STAGES if variant.filter == main.filter else ("generate",)


def link_shared_stages(variant: RunLayout, shared: tuple[str, ...] = SHARED_STAGES) -> None:
    """Link the `shared` stage folders of a variant's run folder to the main run's (two levels up); its other
    stages are its own. A variant whose settings changed since its last run (a filter or teacher override added
    or removed) has its links and folders switched: a stage folder it owned holds only what it derived from the
    shared labels, or labels whose answers are in the main run's cache. Call it under the variant folder's run
    lock, so two studies cannot swap folders under each other."""
    variant.root.mkdir(parents=True, exist_ok=True)
    for stage in SHARED_STAGES:
        folder = variant.stage_dir(stage)
        if stage in shared and not folder.is_symlink():
            if folder.exists() and stage == "generate" and not variant.generate.cache.is_symlink():
                # A cache of its own holds labels paid for: never deleted here.
                raise UserError(f"{folder}: a {stage} folder of its own where the study links the main run's; "
                                f"move it away (or delete it) and run the study again")
            if folder.exists():
                shutil.rmtree(folder)
            folder.symlink_to(Path("..", "..", stage), target_is_directory=True)
        elif stage not in shared and folder.is_symlink():
            folder.unlink()  # the link only: the main run's folder stays
    if "generate" not in shared:
        _share_cache(variant)
    _share_teacher_answers(variant)


def _share_cache(variant: RunLayout) -> None:
    """A variant that labels again asks through the main run's cache: an answer it shares with the main run
    (every test query's, and any label made the same way) is paid for once, and the teacher's timing is reused."""
    cache = variant.generate.cache
    if not cache.exists() and not cache.is_symlink():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(Path("..", "..", "..", "generate", cache.name))


def _share_teacher_answers(variant: RunLayout) -> None:
    """Every variant is compared with the main run's reference teacher on the same test queries: its compare
    stage keeps those answers and their timing in the main run's store, so they are paid for and timed once."""
    store = variant.compare.teacher_answers
    if not store.exists() and not store.is_symlink():
        store.parent.mkdir(parents=True, exist_ok=True)
        store.symlink_to(Path("..", "..", "..", "compare", store.name))
