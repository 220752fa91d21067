"""One YAML file describes a whole study; this package is its schema, by job: the sections (labels: data, teacher
and filter; student; measure: compare, cost and tracking), the whole `Config` with the checks across sections
(schema), the variant algebra of a study (variants), `--set` overrides (overrides) and reading a file (load).

Relative paths in a config are resolved against the config file's own folder, so a study runs the same from
any working directory. Every validation problem is reported at once, each with its YAML path.
"""

from distill.config.labels import DataConfig, FilterConfig, ServerConfig, TeacherConfig
from distill.config.load import load_config
from distill.config.measure import CompareConfig, CostConfig, TrackingConfig
from distill.config.overrides import apply_override
from distill.config.schema import Config, StudyConfig, TaskConfig
from distill.config.student import EMBEDDING_MODULES, VLLM_MAX_LORA_RANK, LoraConfig, StudentConfig
from distill.config.variants import FOLDER_NAME, VARIANT_TEACHER_KEYS, deep_merge, split_variant

__all__ = ["EMBEDDING_MODULES", "FOLDER_NAME", "VARIANT_TEACHER_KEYS", "VLLM_MAX_LORA_RANK", "CompareConfig", "Config",
           "CostConfig", "DataConfig", "FilterConfig", "LoraConfig", "ServerConfig", "StudentConfig", "StudyConfig",
           "TaskConfig", "TeacherConfig", "TrackingConfig", "apply_override", "deep_merge", "load_config",
           "split_variant"]
