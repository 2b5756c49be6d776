"""Stage 1, task data: what a task is (`spec`), how its files are read (`loaders`), the paper's
benchmarks and users' own tasks (`registry`), and how prompts are rendered (`prompts`)."""

from .registry import get_task, list_tasks, load_split, load_task_file
from .spec import Example, Source, TaskSpec, Template

__all__ = ["Example", "Source", "TaskSpec", "Template", "get_task", "list_tasks", "load_split",
           "load_task_file"]
