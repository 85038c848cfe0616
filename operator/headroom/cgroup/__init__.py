"""The only code that reads or writes cgroup v2 files."""
