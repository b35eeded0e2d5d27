"""The project file, `tinyops.yaml`: one schema, one loader, errors with key paths."""

from tinyops.project.loader import PROJECT_FILE, find_project_file, load_project
from tinyops.project.schema import Project

__all__ = ["PROJECT_FILE", "Project", "find_project_file", "load_project"]
