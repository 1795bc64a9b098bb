"""Prefect orchestration of the stages defined in dvc.yaml."""
