"""A training killed while it wrote a checkpoint resumes from the last complete one."""

from pathlib import Path

from student.trainer import checkpoint_to_resume


def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    fingerprint = {"key": "k"}
    assert checkpoint_to_resume(folder, fingerprint) is None
    for step in (2, 4, 6):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"weights")
    for step in (2, 4):  # the Trainer writes its state last: checkpoint-6 was being written at the kill
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert checkpoint_to_resume(folder, fingerprint) == str(folder / "checkpoint-4")
    assert checkpoint_to_resume(folder, {"key": "another training"}) is None
    assert not (folder / "checkpoint-4").exists()
